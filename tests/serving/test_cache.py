"""The opt-in explanation cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nla_lens.core.explanation import Explanation
from nla_lens.serving.cache import ExplanationCache, cache_key, checkpoint_identity


def rec(text: str) -> dict:
    return {
        "text": text,
        "raw": f"<explanation>{text}</explanation>",
        "truncated": False,
        "mse_nrm": 0.5,
        "cos": 0.75,
        "fve_nrm": None,
    }


def test_keys() -> None:
    v = torch.randn(16)
    greedy = {"temperature": 0.0, "max_new_tokens": 200}
    k = cache_key("id", v, greedy)
    assert k == cache_key(
        "id", v.double().numpy(), {**greedy, "seed": 123}
    )  # seed ignored when greedy
    assert k == cache_key("id", v, {})  # NLA.explain's defaults
    assert k != cache_key("id2", v, greedy)
    assert k != cache_key("id", v, {**greedy, "max_new_tokens": 100})
    assert k != cache_key("id", v + 1e-6, greedy)
    hot = {"temperature": 1.0, "seed": 1}
    assert cache_key("id", v, hot) != cache_key("id", v, {**hot, "seed": 2})
    assert cache_key("id", v, hot, sample=0) != cache_key("id", v, hot, sample=1)


def test_get_put_split(tmp_path) -> None:
    cache = ExplanationCache(tmp_path / "c.sqlite")
    v = torch.randn(5, 8)
    params = {"temperature": 0.0}
    split = cache.split("id", v, params)
    assert split.misses == [0, 1, 2, 3, 4] and not split.hits
    cache.put_many(
        [(split.keys[1][0], rec("one")), (split.keys[3][0], Explanation("three", "r3", True))]
    )
    assert len(cache) == 2
    split = cache.split("id", v, params)
    assert split.misses == [0, 2, 4]
    assert split.hits[1][0]["text"] == "one" and split.hits[3][0]["truncated"] is True
    assert cache.get_many(["nope"]) == {}
    # Persisted across instances.
    cache.close()
    assert len(ExplanationCache(tmp_path / "c.sqlite")) == 2


def test_all_samples_needed_for_a_hit(tmp_path) -> None:
    cache = ExplanationCache(tmp_path / "c.sqlite")
    v = torch.randn(2, 8)
    params = {"temperature": 1.0, "seed": 0}
    split = cache.split("id", v, params, samples=2)
    cache.put_many(
        [(split.keys[0][0], rec("a")), (split.keys[0][1], rec("b")), (split.keys[1][0], rec("c"))]
    )
    split = cache.split("id", v, params, samples=2)
    assert split.misses == [1] and [r["text"] for r in split.hits[0]] == ["a", "b"]


@pytest.mark.integration
def test_explain_through_cache(tmp_path, nla, toy_residuals) -> None:
    v = toy_residuals[0][:6]
    cache = ExplanationCache(tmp_path / "c.sqlite")
    calls: list[int] = []

    def counting(x, **kw):
        calls.append(len(x))
        return nla.explain(x, **kw)

    first = cache.explain(nla, v[:4], max_new_tokens=24, explain=counting)
    assert calls == [4] and len(cache) == 4
    both = cache.explain(nla, v, max_new_tokens=24, explain=counting)
    assert calls == [4, 2]  # only the two new rows computed
    direct = nla.explain(v, max_new_tokens=24)
    assert [e.text for e in both] == [e.text for e in direct]
    assert [e.index for e in both] == list(range(6))
    assert np.allclose([e.cos for e in both], [e.cos for e in direct])
    assert [e.text for e in first] == [e.text for e in direct[:4]]
    assert both[0].provenance is not None
    assert checkpoint_identity(nla) == checkpoint_identity(nla)
