"""The explorer served for real (uvicorn on the loopback address), the CLI's address
check, and the notebook widget (the same front end; clicks answered in the kernel)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from importlib import resources

import pytest

from nla_lens.cli import main
from nla_lens.errors import ExplorerError
from nla_lens.explore import explorer_widget, serve

pytestmark = pytest.mark.integration


def test_serves_on_loopback_with_a_token(explorer):
    with serve(explorer) as running:
        assert running.host == "127.0.0.1" and running.port > 0
        assert running.url.startswith(f"http://127.0.0.1:{running.port}/?token=")
        with urllib.request.urlopen(running.url, timeout=10) as r:
            assert r.status == 200 and b"page.js" in r.read()
        with pytest.raises(urllib.error.HTTPError) as no_token:
            urllib.request.urlopen(f"{running.base}/api/state", timeout=10)
        assert no_token.value.code == 401
        req = urllib.request.Request(
            f"{running.base}/api/explain", data=json.dumps({"index": 2}).encode(),
            headers={"X-NLA-Token": running.token, "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as r:
            kinds = [json.loads(line)["type"] for line in r.read().splitlines() if line.strip()]
        assert kinds[0] == "start" and kinds[-1] == "finished"
    assert not running.thread.is_alive()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_another_address_needs_allow_remote(explorer, host):
    with pytest.raises(ExplorerError, match="loopback"):
        serve(explorer, host=host)


def test_cli_refuses_a_remote_bind_before_loading_anything(capsys):
    assert main(["explore", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert main(["explore", "--port", "70000"]) == 2


def test_widget_shares_the_front_end_and_streams_in_the_kernel(explorer):
    w = explorer_widget(explorer)
    static = resources.files("nla_lens.explore").joinpath("static")
    assert w._esm == static.joinpath("explorer.js").read_text(encoding="utf-8")
    assert w.state["view"]["strip"] == explorer.state()["view"]["strip"]
    sent = []
    w.send = sent.append  # what reaches the front end
    w._on_message(w, {"type": "explain", "index": 4})
    kinds = [m["type"] for m in sent]
    assert kinds[0] == "start" and "segment" in kinds and kinds[-1] == "finished"
    sent.clear()
    w._on_message(w, {"type": "explain", "index": 10_000})
    assert sent == [{"type": "error", "index": 10_000, "message": sent[0]["message"]}]
    assert "no token" in sent[0]["message"]
    sent.clear()
    w._on_message(w, {"type": "launch"})
    assert sent[0]["type"] == "error" and "unknown request" in sent[0]["message"]
    sent.clear()
    w._on_message(w, {"type": "state", "view": "grid.csv"})
    assert sent[0]["state"]["view"]["patching"]["layers"] == [0, 1]


def test_nla_explore_attaches_to_the_users_model_and_edits(nla, subject, task):
    import torch

    from nla_lens import residual_edit

    model, tok = subject
    plain = nla.explore(model, task.clean, tokenizer=tok)
    zeroed = nla.explore(
        model, task.clean, tokenizer=tok,
        edits=[residual_edit(nla.layer, lambda h: torch.zeros_like(h), positions=[2])],
    )  # fmt: skip
    a, b = plain.explorer.view().vectors, zeroed.explorer.view().vectors
    assert torch.equal(a[1], b[1]) and not torch.equal(a[2], b[2]) and (b[2] == 0).all()
    sent = []
    zeroed.send = sent.append
    zeroed._on_message(zeroed, {"type": "explain", "index": 2})
    assert sent[-1] == {"type": "error", "index": 2, "message": "cannot explain: all-zero vector"}
    with pytest.raises(ExplorerError, match="reply"):
        nla.explore(model, task.clean, tokenizer=tok, reply_tokens=2, edits=[])
