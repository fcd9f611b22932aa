"""Notebook-native results: result sets, accepted inputs, flagged rows, pages and figures."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import pytest
import torch

from nla_lens import Explanations, activation_patching, explain_dataset, explain_run
from nla_lens.experiments import HTMLPage, kl_to_clean, patching_html, plot_patching
from nla_lens.experiments.patching_views import MIN_SPAN, color_range, plot_patching_interactive
from nla_lens.subjects import residual_edit

pytestmark = pytest.mark.integration


def test_explain_returns_a_notebook_result_set(nla, toy_residuals):
    v = toy_residuals[0][:3]
    out = nla.explain(v, max_new_tokens=96)
    assert isinstance(out, Explanations) and isinstance(out, list) and len(out) == 3
    assert out[0].text == out.texts[0]
    df = out.to_frame()
    assert list(df["explanation"]) == out.texts and {"cos", "fve_nrm", "index"} <= set(df.columns)
    assert "<table" in out._repr_html_() and html.escape(out.texts[0]) in out._repr_html_()
    assert repr(out).startswith("Explanations(3 for 3 vectors") and "\n" not in repr(out)
    one = repr(out[0])
    assert "\n" not in one and "provenance" not in one and "cos=" in one
    assert out[0].provenance is not None  # still reachable


def test_explain_takes_what_the_workflows_hand_out(nla, toy_residuals, subjects):
    v = toy_residuals[0][:6]
    flat = nla.explain(v, max_new_tokens=16).texts
    grid = nla.explain(v.reshape(2, 3, -1), max_new_tokens=16)
    assert grid.texts == flat
    df = grid.to_frame()
    assert list(df["batch"]) == [0, 0, 0, 1, 1, 1] and list(df["position"]) == [0, 1, 2] * 2
    frame = pd.DataFrame({"activation_vector": list(v.numpy()), "note": list("abcdef")})
    frame.index = [10, 11, 12, 13, 14, 15]
    from_df = nla.explain(frame, max_new_tokens=16)
    assert from_df.texts == flat and list(from_df.to_frame()["row"]) == list(frame.index)
    assert nla.explain(frame["activation_vector"], max_new_tokens=16).texts == flat
    bridge = subjects["transformer_lens"]
    tokens = torch.tensor([[bridge.tokenizer.bos_token_id, 5, 9, 12]])
    _, cache = bridge.run_with_cache(tokens, names_filter=nla.hook_name)
    from_cache = nla.explain(cache, max_new_tokens=16)
    assert from_cache.texts == nla.explain(cache[nla.hook_name][0], max_new_tokens=16).texts
    assert list(from_cache.to_frame()["position"]) == [0, 1, 2, 3]


def test_explain_dataset_takes_a_dataframe(nla, toy_residuals, tmp_path):
    v = toy_residuals[0][:5]
    frame = pd.DataFrame({"activation_vector": list(v.numpy()), "id": range(5)})
    out = tmp_path / "out.parquet"
    res = explain_dataset(frame, out, av=nla, max_new_tokens=16, progress=False)
    table = pd.read_parquet(out)
    assert res.rows == 5 and list(table["id"]) == list(range(5))
    assert list(table["explanation"]) == nla.explain(v, max_new_tokens=16).texts
    assert not (tmp_path / "out.parquet.input.parquet").exists()


def test_zero_residuals_become_flagged_rows(nla, subjects, prompts):
    model = subjects["hf"]
    clean, _ = prompts
    zero_at_2 = residual_edit(nla.layer, lambda r: torch.zeros_like(r), positions=[2])
    run = explain_run(
        nla, model, clean, positions=[1, 2, 3], max_new_tokens=16,
        tokenizer=subjects["tokenizer"], **zero_at_2,
    )  # fmt: skip
    assert [e.skipped for e in run.explanations] == [None, "all-zero vector", None]
    assert run.texts[1] == "" and run.texts[0] and run.texts[2]
    assert "skipped" in str(run.to_html())
    t = nla.transcript(model, clean, tokenizer=subjects["tokenizer"], max_new_tokens=16)
    assert not any("skipped" in e.flags for e in t)
    other = explain_run(
        nla, model, clean, positions=[1, 2, 3], max_new_tokens=16, tokenizer=subjects["tokenizer"]
    )
    d = run.diff(other).to_frame()
    assert math.isnan(d["cross_cos_a_on_b"][1]) or d["cross_cos_a_on_b"][1] is None
    assert d["cross_cos_a_on_b"][0] is not None


def test_patching_frame_page_and_figures(nla, subjects, prompts, tmp_path):
    import matplotlib.pyplot as plt

    model, (clean, corrupt) = subjects["transformer_lens"], prompts
    correct, wrong = int(clean[0, -1]), int(corrupt[0, -1])
    last = subjects["hf"].config.num_hidden_layers - 1
    df = activation_patching(
        nla, model, clean, corrupt, layers=[0, nla.layer, last], positions=[1, -1],
        answer_tokens=(correct, wrong), max_new_tokens=16,
    )  # fmt: skip
    assert list(df["downstream_of_k"]) == [False] * 4 + [True] * 2
    assert {"logit_diff", "metric"} <= set(df.columns)
    # the last block's output at the last position fixes the next-token logits: the patched
    # run then predicts exactly as the corrupted run, which the normalised metric calls 0
    cell = df[(df.layer == last) & (df.position == df.position.max())]["metric"].item()
    assert cell == pytest.approx(0.0, abs=1e-4)
    untouched = df[(df.layer == last) & (df.position == 1)]["metric"].item()
    assert untouched == pytest.approx(1.0, abs=1e-4)  # a past position after every block: no effect
    assert color_range(df, "metric") == (-1.0, 1.0)
    noise = df.assign(tiny=1e-17)
    assert color_range(noise, "tiny") == (-MIN_SPAN, MIN_SPAN)
    page = patching_html(df)
    assert isinstance(page, HTMLPage) and df["explanation"].iloc[0][:20] in page
    saved = page.save(tmp_path / "p.html").read_text(encoding="utf-8")
    assert saved.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in saved
    before = set(plt.get_fignums())
    fig = plot_patching(df)
    assert set(plt.get_fignums()) == before and fig.axes  # closed: a notebook shows it once
    inter = plot_patching_interactive(df)
    assert "customdata" in inter.to_plotly_json()["data"][0]


def test_kl_is_clamped_at_zero():
    logits = torch.randn(3, 50, dtype=torch.float64).float()
    assert kl_to_clean(logits, logits, logits) == 0.0
    assert kl_to_clean(logits + torch.randn(3, 50), logits, logits) > 0


def test_dataframe_without_vector_column_is_refused(nla):
    from nla_lens.errors import VectorError

    with pytest.raises(VectorError, match="activation_vector"):
        nla.explain(pd.DataFrame({"x": [np.zeros(64)]}))
