"""Per-token transcripts and search by description on the toy subject."""

from __future__ import annotations

from html import escape

import pytest
import torch

from nla_lens import NLAError
from nla_lens.experiments.transcript import Transcript
from nla_lens.toy import read_explanation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chat(subject):
    """A toy chat of facts; ``words`` are its animals and places, each once."""
    words = ["cat", "house", "dog", "park", "fox", "river", "owl", "lake"]
    facts = " ".join(
        f"the {a} is in the {p}." for a, p in zip(words[::2], words[1::2], strict=True)
    )
    return [{"role": "user", "content": facts}], words


@pytest.mark.parametrize("layout", ["subject", "subject_multimodal"])
def test_chat_transcript_names_tokens(nla, toy, chat, layout):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    loader = AutoModelForImageTextToText if layout == "subject_multimodal" else AutoModelForCausalLM
    model = loader.from_pretrained(str(getattr(toy, layout)), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(toy.subject))
    messages, words = chat
    t = nla.transcript(model, messages, tokenizer=tok, max_new_tokens=96)
    assert isinstance(t, Transcript) and len(t) > len(words)
    content = [e for e in t if e.token.strip() in words]  # tokens decode with their space
    assert len(content) == len(words)
    named = [read_explanation(e.explanation.text).token == e.token for e in content]
    assert sum(named) / len(named) >= 0.8, [(e.token, e.explanation.text) for e in content]
    # Noisy positions are flagged, not hidden.
    assert t[0].token == tok.bos_token and "bos" in t[0].flags and "early" in t[0].flags
    assert all("early" in e.flags for e in t if e.position < 10)
    assert all("early" not in e.flags for e in t if e.position >= 10)
    assert all(e.fve_nrm is not None and e.norm > 0 for e in t)
    # Three renderings.
    text = t.to_text()
    for e in content[:3]:
        assert f"token={e.token!r}" in text  # the explanation's lines, indented under it:
        assert all(f"    {line}" in text for line in e.explanation.text.splitlines())
    assert "fve_nrm=" in text and "[early" in text
    html = t._repr_html_()
    assert "hsl(" in html and escape(content[0].explanation.text) in html
    df = t.to_frame()
    assert len(df) == len(t) and {"position", "token", "explanation", "fve_nrm", "flags"} <= set(
        df.columns
    )
    assert df.loc[0, "noisy"]


def test_transcript_with_generated_reply(nla, subject):
    model, tok = subject
    t = nla.transcript(
        model,
        [{"role": "user", "content": "cat"}],
        tokenizer=tok,
        reply_tokens=4,
        max_new_tokens=96,
    )
    sections = [e.section for e in t]
    assert sections.count("reply") >= 1 and sections[0] == "prompt"
    assert sections == sorted(sections, key=lambda s: s == "reply")


def test_transcript_samples(nla, subject):
    model, tok = subject
    t = nla.transcript(model, "cat dog", tokenizer=tok, samples=3, seed=0, max_new_tokens=96)
    assert all(len(e.explanations) == 3 for e in t)
    assert len(t.to_frame()) == 3 * len(t)


def test_search_by_description(nla, subject, chat):
    model, tok = subject
    messages, words = chat
    t = nla.transcript(model, messages, tokenizer=tok, max_new_tokens=96)
    found = 0

    def describe(w):  # line 3 of the toy's format: the token and what follows it
        return f'token " {w}"; next comes ' + ("is" if w in words[::2] else ".")

    for w in words[2:8]:
        hits = nla.search(describe(w), t, top_k=3)
        assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
        found += hits[0].token.strip() == w
    assert found >= 5
    raw_hits = nla.search(describe(words[3]), t.vectors, top_k=1, centered=True)
    assert raw_hits[0].index == [e.token.strip() for e in t].index(words[3])
    with pytest.raises(NLAError):
        nla.search("x", t, top_k=0)


def test_any_vector_directions(nla, toy_residuals):
    """The AV reads any direction: a difference of means, a probe/SAE-like row; the norm
    is handled by the injection scale (explanations do not depend on the vector's scale)."""
    vectors, token_ids = toy_residuals
    same = token_ids == token_ids[0]
    diff_of_means = vectors[same].mean(0) - vectors.mean(0)
    tiny, huge = nla.explain(
        torch.stack([diff_of_means * 1e-3, diff_of_means * 1e3]), max_new_tokens=96
    )
    assert tiny.text == huge.text


def test_mismatched_subject_refused_before_any_generation(nla, subject):
    """Wrong d_model or a layer out of range: SubjectMismatchError before the AV runs."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from nla_lens.errors import SubjectMismatchError

    _, tok = subject
    calls = []
    real = nla.av.backend.generate
    nla.av.backend.generate = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        small = dict(
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            vocab_size=len(tok),
        )
        wide = Gemma3ForCausalLM(
            Gemma3TextConfig(hidden_size=32, num_hidden_layers=4, **small)
        ).eval()
        with pytest.raises(SubjectMismatchError, match="d_model"):
            nla.transcript(wide, "cat", tokenizer=tok)
        shallow = Gemma3ForCausalLM(
            Gemma3TextConfig(hidden_size=64, num_hidden_layers=2, **small)
        ).eval()
        with pytest.raises(SubjectMismatchError, match=f"layer {nla.layer}"):
            nla.explain_run(shallow, "cat", tokenizer=tok)
        with pytest.raises(SubjectMismatchError):
            nla.capture(shallow, "cat", tokenizer=tok)
    finally:
        del nla.av.backend.generate
    assert calls == []
