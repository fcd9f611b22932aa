"""Fast paths around a Hugging Face tokenizer: batch encode and decode straight on
its Rust tokenizer, where that is all transformers would do.

transformers' Python layer costs ~1.5 ms a decode step at 32 rows, and the Rust
batch calls hand rows to the tokenizers thread pool, whose threads compete with
torch's for the cores when the model computes on the CPU. Each fast path is taken
only for a tokenizer whose methods are transformers' own (no subclass changes what
they do) and whose settings make transformers' call the plain Rust one; any other
tokenizer goes through transformers. Tests check the strings and ids against
transformers on the released Gemma-3, Llama-3.1 and Qwen tokenizers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["batch_decoder", "batch_encoder"]


def batch_decoder(
    tokenizer: Any, *, parallel: bool = True
) -> Callable[[list[list[int]]], list[str]]:
    """``tokenizer.batch_decode(seqs, skip_special_tokens=True)``, run straight on the Rust
    tokenizer where that is all it does: a transformers ``TokenizersBackend`` whose decode
    methods are its base class's and whose text it does not clean up after (transformers'
    per-row Python loop costs ~1.5 ms a step at 32 rows). Any other tokenizer decodes
    through its own ``batch_decode``.

    With ``parallel`` the rows go to the Rust ``decode_batch`` (its thread pool); without,
    to ``decode`` one by one. The loop is for a model computing on the CPU: there the
    pool's threads compete with torch's for the same cores, and on the 2-core toy a
    streamed decode ran ~8% slower with them (the decodes themselves 2x slower)."""

    def slow(seqs: list[list[int]]) -> list[str]:
        out: list[str] = tokenizer.batch_decode(seqs, skip_special_tokens=True)
        return out

    rust = _plain_rust(
        tokenizer, (("_decode", "backend"), ("decode", "base"), ("batch_decode", "base")),
        "decode_batch",
    )  # fmt: skip
    if rust is None or _cleans_up(tokenizer):
        return slow

    def fast(seqs: list[list[int]]) -> list[str]:
        out: list[str] = rust.decode_batch(seqs, skip_special_tokens=True)
        return out

    def fast_serial(seqs: list[list[int]]) -> list[str]:
        return [rust.decode(seq, skip_special_tokens=True) for seq in seqs]

    return fast if parallel else fast_serial


def _plain_rust(tokenizer: Any, methods: tuple[tuple[str, str], ...], needs: str) -> Any:
    """The Rust tokenizer behind ``tokenizer`` if it is a transformers ``TokenizersBackend``
    whose ``methods`` are still those of the named class (``"backend"``: TokenizersBackend,
    ``"base"``: PreTrainedTokenizerBase; no subclass changes what they do) and the Rust
    tokenizer has the method ``needs``; else None."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout
        return None
    if not isinstance(tokenizer, TokenizersBackend):
        return None
    owners = {"backend": TokenizersBackend, "base": PreTrainedTokenizerBase}
    cls = type(tokenizer)
    if any(getattr(cls, m) is not getattr(owners[o], m) for m, o in methods):
        return None
    rust = getattr(tokenizer, "_tokenizer", None)
    return rust if callable(getattr(rust, needs, None)) else None


def _cleans_up(tokenizer: Any) -> bool:
    """Whether transformers' decode post-processes the text (``clean_up_tokenization``):
    when asked to, except for a BPE model, which it leaves alone unless forced."""
    if not getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return False
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
    return type(model).__name__ != "BPE" or bool(getattr(tokenizer, forced, True))


def batch_encoder(
    tokenizer: Any, *, parallel: bool = True
) -> Callable[[list[str]], list[list[int]]]:
    """``tokenizer(texts, add_special_tokens=True)["input_ids"]`` as lists, run straight on
    the Rust tokenizer where that is what transformers would run: a ``TokenizersBackend``
    whose call and ``_encode_plus`` are transformers' own. Checked at every call: the
    Rust tokenizer has no truncation or padding set, and it splits special tokens
    exactly when the tokenizer asks it to (``split_special_tokens``); otherwise, and for
    any other tokenizer, the texts go through transformers (which resets those settings
    itself).

    With ``parallel`` the texts go to the Rust ``encode_batch`` (its thread pool);
    without, to ``encode`` one by one, for a model on the CPU (see the module note: on
    the toy an AR call took 18 ms instead of 21 ms)."""

    def slow(texts: list[str]) -> list[list[int]]:
        return [list(r) for r in tokenizer(texts, add_special_tokens=True)["input_ids"]]

    rust = _plain_rust(
        tokenizer,
        (("__call__", "base"), ("_encode_plus", "backend"),
         ("_get_padding_truncation_strategies", "base")),
        "encode_batch",
    )  # fmt: skip
    if rust is None or hasattr(tokenizer, "_switch_to_input_mode"):
        return slow

    def settled() -> bool:
        """Whether transformers' call would leave the Rust tokenizer as it is."""
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        return (
            rust.truncation is None
            and rust.padding is None
            and bool(rust.encode_special_tokens) == split
        )

    def fast(texts: list[str]) -> list[list[int]]:
        if not settled():
            return slow(texts)
        return [e.ids for e in rust.encode_batch(texts, add_special_tokens=True)]

    def fast_serial(texts: list[str]) -> list[list[int]]:
        if not settled():
            return slow(texts)
        return [rust.encode(t, add_special_tokens=True).ids for t in texts]

    return fast if parallel else fast_serial
