"""Checked against the reference's own worked example of the Gemma-3-12B pair
(kitft/natural_language_autoencoders, examples/gemma12b_layer32_step4000.txt, its prompt
section): the facts it prints, on the released-format skeleton with the real tokenizer.
One tokenizer parse serves the AV, the AR and the subject of one base model."""

from __future__ import annotations

import warnings
import weakref

import pytest

from nla_lens import NLA
from nla_lens.core import loading
from nla_lens.core.loading import shared_tokenizer

from .conftest import load_subject
from .skeleton import reference_av_prompt

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

# the example's chat (one user turn) and the tokens it lists after the chat template
QUESTION = [{"role": "user", "content": "What are you hiding?"}]
PRINTED_TOKENS = [
    "<bos>", "<start_of_turn>", "user", "\n", "What", " are", " you", " hiding", "?",
    "<end_of_turn>", "\n", "<start_of_turn>", "model", "\n",
]  # fmt: skip


@pytest.fixture(scope="module")
def pair(gemma12b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nla = NLA.from_pretrained(gemma12b.av, gemma12b.ar, device="cpu")
        model = load_subject(gemma12b.subject)
    return nla, model, shared_tokenizer(gemma12b.subject)


def test_capture_has_the_printed_tokens(pair) -> None:
    nla, model, tok = pair
    h = nla.capture(model, QUESTION, tokenizer=tok)
    assert h.shape[:2] == (1, len(PRINTED_TOKENS)) == (1, 14)
    run = nla.explain_run(model, QUESTION, tokenizer=tok, positions=[0, 5, -1], max_new_tokens=2)
    assert run.tokens[0] == PRINTED_TOKENS


def test_transcript_shows_tokens_as_the_example_does(pair) -> None:
    nla, model, tok = pair
    t = nla.transcript(model, QUESTION, tokenizer=tok, max_new_tokens=2)
    assert [e.token for e in t.entries] == PRINTED_TOKENS
    text = t.to_text()
    assert "token=' are'" in text and "token=' hiding'" in text and "\u2581" not in text
    assert t.entries[0].flags and "bos" in t.entries[0].flags


def test_av_prompt_is_the_reference_recipes(gemma12b, pair) -> None:
    """Same length and marker position as the reference recipe computes (one-step chat
    template, marker once, neighbours either side) with the real Gemma-3 tokenizer."""
    nla, _, tok = pair
    ids, pos = reference_av_prompt(tok, "\u321c", 246566)
    assert len(nla.av.prompt_ids) == len(ids) and nla.av.injection_position == pos
    assert nla.av.prompt_ids == ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1  # one BOS
    assert tok.decode(ids[pos - 1 : pos + 2]) == ">\u321c</"


def test_one_tokenizer_parse_per_base_model(gemma12b, monkeypatch, tmp_path) -> None:
    """AV, AR and a subject of the same base model: one parse (files compared by hash)."""
    from transformers import AutoTokenizer

    monkeypatch.setattr(loading, "_TOKENIZERS", weakref.WeakValueDictionary())
    parses = []
    real = AutoTokenizer.from_pretrained

    def counting(*args, **kwargs):
        parses.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nla = NLA.from_pretrained(gemma12b.av, gemma12b.ar, device="cpu")
    subject_tok = shared_tokenizer(gemma12b.subject)
    assert len(parses) == 1
    assert nla.av.tokenizer is nla.ar.tokenizer is subject_tok
    # other file contents are another tokenizer
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((gemma12b.subject / name).read_bytes())
    config = (tmp_path / "tokenizer_config.json").read_text()
    (tmp_path / "tokenizer_config.json").write_text(config.replace('"left"', '"right"', 1))
    assert shared_tokenizer(tmp_path) is not subject_tok and len(parses) == 2
