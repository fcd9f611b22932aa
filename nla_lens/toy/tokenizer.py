"""The toy word-level tokenizer: Gemma-like special ids, one token per word.

Built with the ``tokenizers`` library and wrapped as a transformers fast
tokenizer, so it loads with ``AutoTokenizer.from_pretrained`` like a real
checkpoint's. Ids: ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3, then the
chat and image tokens, the injection marker and tags (added, not special),
punctuation, digits and words.
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .vocab import (
    ADDED_TOKENS,
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    base_vocabulary,
)

__all__ = [
    "CHAT_TEMPLATE",
    "MODEL_MAX_LENGTH",
    "build_tokenizer",
    "content_token_ids",
    "token_id",
    "token_ids",
]

MODEL_MAX_LENGTH = 512

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
    ordered = [*SPECIAL_TOKENS, *ADDED_TOKENS, *base_vocabulary()]
    vocab = {token: i for i, token in enumerate(ordered)}
    if len(vocab) != len(ordered):
        raise ValueError("toy vocabulary has duplicate entries")

    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    # WordPiece without "##" continuations: joins tokens with single spaces.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
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
    """The id of one vocabulary token (raises if it is unknown)."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int) or found == tokenizer.unk_token_id:
        raise KeyError(f"{token!r} is not in the toy vocabulary")
    return found


def content_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the ordinary vocabulary (words, digits, punctuation): no special or added tokens."""
    added = set(tokenizer.get_added_vocab().values())
    return sorted(i for i in tokenizer.get_vocab().values() if i not in added)
