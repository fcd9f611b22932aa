"""Issue 20, the explorer (branch `explore`): requests without the token or from another
origin, requests naming what it was not given, malformed JSON, and a client that
disconnects during a stream. Each gets a clear 4xx (never a 500 or a traceback), and a
disconnect leaves the explorer serving: the next request streams a whole explanation."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import torch

TOKEN = "round3-token-0123456789"
BASE = "http://127.0.0.1:8765"
AUTH = {"X-NLA-Token": TOKEN}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    import pandas as pd

    path = tmp_path_factory.mktemp("given") / "grid.csv"
    pd.DataFrame([{"batch": 0, "layer": 0, "position": 1, "token": "cat", "metric": 0.5,
                   "explanation": "x", "cos": 0.1}]).to_csv(path, index=False)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def explorer(nla, subject, table):
    from nla_lens.explore import make_explorer
    from nla_lens.toy import tasks

    model, tok = subject
    return make_explorer(nla, model, tasks(1)[0].clean, tokenizer=tok, files=[table])


def app_of(explorer):
    from nla_lens.explore.app import build_app

    return build_app(explorer, token=TOKEN)


@pytest.fixture(scope="module")
def client(explorer):
    from starlette.testclient import TestClient

    return TestClient(app_of(explorer), base_url=BASE, raise_server_exceptions=False)


def lines(r) -> list[dict]:
    return [json.loads(x) for x in r.text.splitlines() if x.strip()]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-NLA-Token": ""},
        {"X-NLA-Token": TOKEN[:-1]},
        {"X-NLA-Token": TOKEN + "0"},
        {"X-NLA-Token": TOKEN.upper()},
        {"Cookie": f"another_cookie={TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}"},
    ],
    ids=["empty", "prefix", "longer", "upper-case", "other-cookie", "bearer"],
)
def test_a_request_without_the_token_is_refused(client, headers):
    for r in (client.get("/api/state", headers=headers),
              client.post("/api/explain", json={"index": 1}, headers=headers)):  # fmt: skip
        assert r.status_code == 401 and "session token" in r.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:8765.evil.example"},
        {"Origin": "https://127.0.0.1:8765"},
        {"Origin": "http://localhost:8765"},  # another origin of this machine
        {"Host": "127.0.0.1.nip.io:8765"},
        {"Host": "localhost.evil.example"},
    ],
    ids=["suffixed-origin", "https-origin", "other-name", "rebinding-name", "subdomain"],
)
def test_a_request_from_another_origin_is_refused(client, headers):
    r = client.post("/api/explain", json={"index": 1}, headers={**AUTH, **headers})
    assert r.status_code == 403 and r.json()["error"]


def test_a_websocket_is_not_a_way_around_the_guard(explorer):
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    c = TestClient(app_of(explorer), base_url=BASE)
    with pytest.raises(WebSocketDisconnect), c.websocket_connect("/api/explain") as ws:
        ws.receive_text()


@pytest.mark.parametrize(
    "query",
    [
        "view=GRID.CSV",
        "view=./grid.csv",
        "view=grid.csv%00",
        "view=grid",
        "view=%2Fgrid.csv",
        "view=prompt/../grid.csv",
    ],
)
def test_views_are_found_by_their_given_name_only(client, table, query):
    r = client.get(f"/api/state?{query}", headers=AUTH)
    assert r.status_code == 404 and "error" in r.json()
    full = client.get(f"/api/state?view={table}", headers=AUTH)  # the path is not a name
    assert full.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b'{"index": ' + b"[" * 20000 + b"]" * 20000 + b"}",  # deep, yet under the size limit
        b'{"index": 1, "view": ["prompt"]}',
        b'{"index": 1, "view": {"name": "prompt"}}',
        b'{"index": 1e400}',
        b'{"index": Infinity}',
        b'{"index": [1]}',
        b"\x00",
        b'{"index": 1}{"index": 2}',
    ],
    ids=[
        "deep",
        "view-list",
        "view-object",
        "huge-float",
        "infinity",
        "index-list",
        "nul",
        "two-objects",
    ],
)
def test_malformed_json_gets_a_clear_4xx(client, body):
    r = client.post("/api/explain", content=body,
                    headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert r.json()["error"] and "Traceback" not in r.text


def _scope(spec: str) -> dict:
    headers = [(b"host", b"127.0.0.1:8765"), (b"x-nla-token", TOKEN.encode()),
               (b"content-type", b"application/json")]  # fmt: skip
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": spec},
            "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/api/explain",
            "raw_path": b"/api/explain", "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8765)}  # fmt: skip


async def _disconnect_after_first_line(
    app, index: int, spec: str
) -> tuple[list[bytes], BaseException | None]:
    """POST /api/explain as a browser tab that closes after the first streamed line: with
    ASGI spec 2.0 the server says http.disconnect, from 2.4 a send raises OSError."""
    first, chunks, asked = asyncio.Event(), [], False

    async def receive():
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": json.dumps({"index": index}).encode()}
        await first.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body"):
            if first.is_set() and spec >= "2.4":
                raise OSError("the client went away")
            chunks.append(message["body"])
            first.set()

    escaped = None
    try:
        await asyncio.wait_for(app(_scope(spec), receive, send), timeout=120)
    except OSError:
        pass  # the send error itself may come back out: the server's own
    except Exception as exc:  # anything else reaches the server as an application error
        escaped = exc
    return chunks, escaped


@pytest.mark.parametrize("spec", ["2.0", "2.4"])
def test_a_client_that_disconnects_during_a_stream(explorer, spec):
    from starlette.testclient import TestClient

    app = app_of(explorer)
    explorer._done.clear()  # every token is decoded afresh
    got, escaped = asyncio.run(_disconnect_after_first_line(app, 2, spec))
    assert got and json.loads(got[0].splitlines()[0])["type"] == "start"
    # the explorer still serves, and the token read halfway is not replayed as whole
    answers: dict[int, list[dict]] = {}

    def ask(i: int) -> None:
        c = TestClient(app, base_url=BASE, raise_server_exceptions=False)
        answers[i] = lines(c.post("/api/explain", json={"index": i}, headers=AUTH))

    for i in (3, 2):
        t = threading.Thread(target=ask, args=(i,), daemon=True)
        t.start()
        t.join(timeout=120)
        assert not t.is_alive(), f"the request after a disconnect hung (token {i})"
        kinds = [m["type"] for m in answers[i]]
        assert kinds[0] == "start" and kinds[-1] == "finished", kinds
        assert answers[i][-1]["text"]
    # a closed tab is routine: nothing escapes to the server as an application error
    assert escaped is None, repr(escaped)
