"""Shared fixtures. Tiers: unit tests load no model; integration tests use the
shipped toy checkpoints (nla_lens.toy.checkpoints()); slow ones are marked."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def toy():
    """The shipped toy checkpoints (or a build in $NLA_LENS_TOY_DIR while developing the builder)."""
    from nla_lens import toy

    return toy.checkpoints(os.environ.get("NLA_LENS_TOY_DIR"))


@pytest.fixture(scope="session")
def nla(toy):
    from nla_lens import NLA

    return NLA.from_pretrained(toy.av, toy.ar, device="cpu")


@pytest.fixture(scope="session")
def subject(toy):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(toy.subject))
    model = AutoModelForCausalLM.from_pretrained(str(toy.subject), dtype=torch.float32).eval()
    return model, tok


def content_vocab(tok) -> list[int]:
    """Ids of the subject's ordinary (non-special, non-tag) tokens."""
    special = set(tok.all_special_ids)
    added = set(tok.get_added_vocab().values())
    return sorted(i for i in tok.get_vocab().values() if i not in special and i not in added)


@pytest.fixture(scope="session")
def toy_residuals(subject, nla):
    """Real layer-K residuals of the toy subject: random content-token sequences
    after BOS, positions >= 2. Returns (vectors [n, d], token ids at those positions)."""
    model, tok = subject
    vocab = torch.tensor(content_vocab(tok))
    g = torch.Generator().manual_seed(1234)
    n, seq = 48, 12
    ids = vocab[torch.randint(len(vocab), (n, seq), generator=g)]
    ids = torch.cat([torch.full((n, 1), tok.bos_token_id), ids], dim=1)
    with torch.inference_mode():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states[nla.layer + 1]
    pos = torch.randint(2, seq + 1, (n,), generator=g)
    return hs[torch.arange(n), pos].clone(), ids[torch.arange(n), pos].clone()
