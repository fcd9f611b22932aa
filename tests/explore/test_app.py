"""The explorer's web app: what it serves, and the security cases (token, origin, host,
files outside what it was given, clear 4xx and no traceback)."""

from __future__ import annotations

import json

import pytest

from nla_lens.errors import ExplorerError
from nla_lens.explore import Explorer, View, make_explorer

from .conftest import TOKEN

pytestmark = pytest.mark.integration
AUTH = {"X-NLA-Token": TOKEN}


def lines(response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_state_holds_the_strip_baseline_and_fit(client, explorer, task):
    r = client.get("/api/state", headers=AUTH)
    assert r.status_code == 200
    state = r.json()
    view = state["view"]
    assert view["live"] and view["name"] == "prompt" and state["views"] == ["prompt", "grid.csv"]
    tokens = [t["token"] for t in view["strip"]]
    assert "".join(t for t in tokens if t != "<bos>").startswith(
        task.clean
    )  # pieces keep their spaces
    assert [t["section"] for t in view["strip"]].count("reply") >= 1
    assert state["baseline"] == explorer.nla.baseline.label
    assert "fit check" in view["fit"]["message"] or "baseline" in view["fit"]["message"]
    assert "NaN" not in r.text  # valid JSON for the browser


def test_explain_streams_segments_then_the_explanation(client, explorer):
    r = client.post("/api/explain", json={"index": 3}, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    out = lines(r)
    kinds = [m["type"] for m in out]
    assert kinds[0] == "start" and kinds[-1] == "finished" and "segment" in kinds
    assert kinds.index("delta") < kinds.index("segment")
    seg = next(m for m in out if m["type"] == "segment")
    assert seg["cos"] is not None and seg["baseline"] == explorer.nla.baseline.label
    fin = out[-1]
    want = explorer.nla.explain(explorer.view().vectors[3])[0]
    assert fin["text"] == want.text and fin["cos"] == pytest.approx(want.cos, abs=1e-6)
    again = lines(client.post("/api/explain", json={"index": 3}, headers=AUTH))
    assert again == out  # replayed from memory


def test_the_page_and_its_assets_come_from_the_app(client):
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and "/static/page.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    for name in ("explorer.js", "page.js", "explorer.css"):
        r = client.get(f"/static/{name}", headers=AUTH)
        assert r.status_code == 200 and r.text
        assert "https://" not in r.text and "http://" not in r.text  # no CDN


def test_a_request_without_the_token_is_refused(explorer):
    from starlette.testclient import TestClient

    from nla_lens.explore.app import build_app

    fresh = TestClient(build_app(explorer, token=TOKEN), base_url="http://127.0.0.1:8765")
    for path in ("/", "/api/state", "/static/explorer.js"):
        r = fresh.get(path)
        assert r.status_code == 401 and "session token" in r.json()["error"]
    assert fresh.post("/api/explain", json={"index": 1}).status_code == 401
    wrong = fresh.get("/api/state?token=not-the-token")
    assert wrong.status_code == 401 and "wrong session token" in wrong.json()["error"]
    # the token in the URL sets a same-site cookie; later requests need no token
    first = fresh.get(f"/?token={TOKEN}")
    assert (
        "SameSite=Strict" in first.headers["set-cookie"]
        and "HttpOnly" in first.headers["set-cookie"]
    )
    assert fresh.get("/api/state").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_a_cross_origin_request_is_refused(client, headers):
    r = client.post("/api/explain", json={"index": 1}, headers={**AUTH, **headers})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    assert client.get("/api/state", headers={**AUTH, **headers}).status_code == 403


def test_same_origin_and_another_host_name(client):
    ok = client.get("/api/state", headers={**AUTH, "Origin": "http://127.0.0.1:8765"})
    assert ok.status_code == 200
    r = client.get("/api/state", headers={**AUTH, "Host": "evil.example:8765"})
    assert r.status_code == 403 and "DNS rebinding" in r.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../pyproject.toml",
        "/static/..%2F..%2Fpyproject.toml",
        "/static/%2e%2e/app.py",
        "/static/app.py",
        "/static/index.html/../../explorer.py",
        "/etc/passwd",
        "/api/state?view=/etc/passwd",
        "/api/state?view=../grid.csv",
        "/api/state?view=" + "%2Fetc%2Fpasswd",
    ],
)
def test_nothing_outside_the_given_files_is_read(client, path):
    r = client.get(path, headers=AUTH)
    assert r.status_code == 404, (path, r.status_code, r.text)
    assert "root:" not in r.text and "[project]" not in r.text and "import" not in r.text


def test_a_given_table_opens_by_name(client):
    r = client.get("/api/state?view=grid.csv", headers=AUTH)
    assert r.status_code == 200
    grid = r.json()["view"]["patching"]
    assert grid["layers"] == [0, 1] and "readout_explanation" in grid["columns"]
    assert "NaN" not in r.text and None in [c["metric"] for c in grid["cells"]]
    r = client.post("/api/explain", json={"view": "grid.csv", "index": 0}, headers=AUTH)
    assert r.status_code in (400, 404) and "error" in r.json()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "must be JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"view": "prompt"}', 400, "JSON object"),
        (b'{"index": "3"}', 400, "whole number"),
        (b'{"index": 9999}', 404, "no token 9999"),
        (b'{"index": -1}', 404, "no token -1"),
        (b'{"index": 1, "view": "nope"}', 404, "no view named"),
        (b'{"index": 1}' + b" " * 70000, 413, "over"),
    ],
)
def test_bad_requests_get_a_clear_4xx(client, body, status, says):
    r = client.post(
        "/api/explain", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == status and says in r.json()["error"]
    assert "Traceback" not in r.text


def test_wrong_method_and_unknown_route(client):
    assert client.get("/api/explain", headers=AUTH).status_code == 405
    assert client.get("/api/nothing", headers=AUTH).status_code == 404


def test_an_unexpected_failure_is_a_500_without_traceback(explorer, monkeypatch, caplog):
    from starlette.testclient import TestClient

    from nla_lens.explore.app import build_app

    def broken(name=None):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(explorer, "state", broken)
    c = TestClient(build_app(explorer, token=TOKEN), base_url="http://127.0.0.1:8765",
                   raise_server_exceptions=False)  # fmt: skip
    r = c.get("/api/state", headers=AUTH)
    assert r.status_code == 500 and "internal error" in r.json()["error"]
    assert "secret" not in r.text and "Traceback" not in r.text


def test_the_explorer_refuses_files_it_cannot_read(nla, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(ExplorerError, match="saved tables"):
        Explorer(nla, files=[other])
    with pytest.raises(ExplorerError, match="no such file"):
        Explorer(nla, files=[tmp_path / "missing.csv"])
    with pytest.raises(ExplorerError, match="nothing to explore"):
        Explorer(nla)
    with pytest.raises(ExplorerError, match="two views"):
        Explorer(nla, [View("a", "a"), View("a", "b")])
    with pytest.raises(ExplorerError, match="model and a prompt"):
        make_explorer(nla, None, "the cat")


def test_patching_grid_colours_by_effect_where_the_frame_has_it(patching_frame):
    from nla_lens.explore import patching_grid

    assert patching_grid(patching_frame)["value"] == "metric"
    grid = patching_grid(patching_frame.assign(effect=[1.0, 0.0, 0.5, float("nan")]))
    assert grid["value"] == "effect" and [c["effect"] for c in grid["cells"]] == [
        1.0,
        0.0,
        0.5,
        None,
    ]
    with pytest.raises(ExplorerError, match="not a patching frame"):
        patching_grid(patching_frame.drop(columns=["metric"]))
