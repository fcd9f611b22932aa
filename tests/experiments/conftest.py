"""Fixtures for the experiments tests: the toy subject in each framework, and prompts."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.conftest import content_vocab


@pytest.fixture(scope="session")
def subjects(toy):
    """A fresh toy subject per framework (TransformerLens switches its model to eager attention)."""
    import nnsight
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nla_lens.subjects import boot_bridge

    def load():
        return AutoModelForCausalLM.from_pretrained(str(toy.subject), dtype=torch.float32).eval()

    tok = AutoTokenizer.from_pretrained(str(toy.subject))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = boot_bridge(load(), name=str(toy.subject))
        nns = nnsight.TransformersModel(load(), task="text-generation", tokenizer=tok)
    return {"transformer_lens": bridge, "nnsight": nns, "hf": load(), "tokenizer": tok}


@pytest.fixture(scope="session")
def prompts(subjects):
    tok = subjects["tokenizer"]
    vocab = torch.tensor(content_vocab(tok))
    g = torch.Generator().manual_seed(99)
    clean = vocab[torch.randint(len(vocab), (1, 9), generator=g)]
    corrupt = vocab[torch.randint(len(vocab), (1, 9), generator=g)]
    bos = torch.tensor([[tok.bos_token_id]])
    return torch.cat([bos, clean], 1), torch.cat([bos, corrupt], 1)
