"""The toy tokenizer: Gemma-like special ids and SentencePiece-like word pieces.

Built with the ``tokenizers`` library and wrapped as a transformers fast
tokenizer, so it loads with ``AutoTokenizer.from_pretrained`` like a real
checkpoint's. As in Gemma-3's tokenizer, a space becomes ``▁`` and belongs to the
piece after it (``"the cat"`` is ``the``, ``▁cat``), ``\\n`` is a piece of its own,
tags are ordinary text split into pieces (``<concept>`` is ``<``, ``concept``,
``>``; ``</concept>`` starts with ``</``), and decoding gives the text back exactly.
Ids: ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3, then the chat and image
tokens (special), then ``\\n``, ``▁``, punctuation (the injection marker U+321C
among it), digits and words, each bare and after a space.
"""

from __future__ import annotations

from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import PreTrainedTokenizerFast

from .vocab import (
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    SPACE,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    base_vocabulary,
)

__all__ = [
    "CHAT_TEMPLATE",
    "MODEL_MAX_LENGTH",
    "build_tokenizer",
    "content_token_ids",
    "spaced_token_ids",
    "token_id",
    "token_ids",
]

MODEL_MAX_LENGTH = 512
# One piece: an optional space mark, then "</", a word, a digit or one other symbol;
# or a newline; or a space mark alone (a run of spaces).
_PIECE = rf"{SPACE}?</|{SPACE}?[A-Za-z]+|{SPACE}?[0-9]|{SPACE}?[^A-Za-z0-9\s{SPACE}]|\n|{SPACE}"

# Gemma-3 style: BOS once, system folded into the first user turn, assistant -> model,
# content either a string or a list of {"type": "text"|"image"} parts.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set sys = messages[0]['content'] -%}"
    "{%- set first_prefix = (sys if sys is string else sys[0]['text']) + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the toy tokenizer deterministically (no randomness involved)."""
    ordered = [*SPECIAL_TOKENS, *base_vocabulary()]
    vocab = {token: i for i, token in enumerate(ordered)}
    if len(vocab) != len(ordered):
        raise ValueError("toy vocabulary has duplicate entries")

    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE), behavior="isolated")
    tok.decoder = decoders.Replace(SPACE, " ")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    bos_id = vocab[BOS_TOKEN]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B:1",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def token_ids(encoded: Any) -> list[int]:
    """Plain ids from ``encode``/``apply_chat_template`` output (list or BatchEncoding)."""
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one vocabulary piece (``"▁cat"``, ``"cat"``, ``"<bos>"``); raises if unknown."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int) or found == tokenizer.unk_token_id:
        raise KeyError(f"{token!r} is not in the toy vocabulary")
    return found


def content_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the ordinary vocabulary (words, digits, punctuation, both variants): no special
    tokens, no newline, no lone space mark."""
    special = set(range(len(SPECIAL_TOKENS))) | {
        token_id(tokenizer, SPACE),
        token_id(tokenizer, "\n"),
    }
    return sorted(i for i in tokenizer.get_vocab().values() if i not in special)


def spaced_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the pieces after a space (``▁cat``): what running text is mostly made of."""
    content = set(content_token_ids(tokenizer))
    return sorted(
        i for t, i in tokenizer.get_vocab().items() if t.startswith(SPACE) and i in content
    )
