"""Hostile and malformed input over real sockets: bounded time on the event loop, strict integers, UTF-8,
nesting depth, shadowed topic names, HEAD, and the caps on what a run stores.

The loop-lag probe runs against a real `ssehub serve` process: a thread asks `/healthz` over and over
while large hostile bodies are sent, and records how long each answer took.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ssehub import EventTooLarge, Hub, HubConfig, Run, TopicNotFound
from ssehub.asgi import create_app
from support import ServerProcess, serve_app

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
PAGE = {"accept": "application/json"}


def make_hub(store: str = "memory://", **config: Any) -> Hub:
    hub = Hub(store, HubConfig(**config))

    @hub.agent("echo")
    async def echo(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        await run.text("hi")
        return {"got": body}

    @hub.agent("huge")
    async def huge(run: Run, body: dict[str, Any]) -> str:
        return "x" * int(body["size"])

    return hub


@pytest.fixture
async def hub() -> Hub:
    return make_hub()


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=30) as c:
        yield c


def assert_error(r: httpx.Response, status: int, code: str | None = None, says: str = "") -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    assert says in error["message"], error


def nested(depth: int, inner: str = "0") -> str:
    """`depth` arrays one in another around `inner`."""
    return "[" * depth + inner + "]" * depth


# -- 3. requests in bounded time ------------------------------------------------------------------------------


class LagProbe:
    """Asks GET /healthz in a thread of its own, one request after another, and keeps each latency."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    r = c.get("/healthz")
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.perf_counter() - began)
                time.sleep(0.005)

    def __enter__(self) -> LagProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def serve(server: Callable[..., ServerProcess], tmp_path: Path) -> Iterator[ServerProcess]:
    yield server("--store", f"sqlite:///{tmp_path / 'hub.db'}", "--demo", "--no-access-log")


def test_hostile_bodies_do_not_stall_the_event_loop(serve: ServerProcess) -> None:
    """8 MB bodies that are slow to parse get their 4xx while /healthz keeps answering within 100 ms."""
    empties = "[" + ",".join(["{}"] * 2_700_000) + "]"  # what took 8 s: every {} was made an event first
    zeros = '{"data":[' + ",".join(["0"] * 4_000_000) + "]}"  # one event, a fifth of a second of json.loads
    deep = nested(3_000_000)  # too deep for the parser: a RecursionError on the loop, then a 400
    hostile: list[tuple[str, str, str, dict[str, str], str, int]] = [
        ("POST", "/topics/big/events", empties, JSON, "a batch holds at most 1000 events", 400),
        ("POST", "/topics/big/events", zeros, JSON, "above the limit", 413),
        ("POST", "/topics/big/events", deep, JSON, "nested more than 100 deep", 400),
        # Parsed off the loop, but 2.6 million arrays would take a second to move back and make again.
        ("POST", "/agents/chat", '{"x":[' + ",".join(["[]"] * 2_600_000) + "]}", JSON, "JSON values", 413),
        # The demo agent wants a message: a 4xx or a run, the loop is what counts.
        ("POST", "/agents/chat", '{"x":' + zeros + "}", {**JSON, "prefer": "respond-async"}, "", 0),
        ("POST", "/topics/big/events", zeros[:6_000_000] + "]}\n", NDJSON, "above the limit", 413),  # one line
        ("POST", "/v1/stream/big", empties, JSON, "at most 1000 JSON messages", 400),
        ("POST", "/v1/stream/big", "[" + zeros + "]", JSON, "above the limit", 413),
    ]
    for body in (empties, zeros, deep):
        assert len(body.encode()) <= 8 * 1024 * 1024
    with httpx.Client(base_url=serve.url, timeout=60) as c:
        assert c.put("/v1/stream/big", headers=JSON).status_code == 201
        c.post("/topics/big/events", json={"data": "warm"}).raise_for_status()
        with LagProbe(serve.url) as probe:
            time.sleep(0.3)
            for _ in range(2):
                for method, path, body, headers, says, status in hostile:
                    r = c.request(method, path, content=body, headers=headers)
                    if status:
                        assert_error(r, status, says=says)
            time.sleep(0.3)
        # Nothing hostile was written, and the topic and the stream still take what is valid.
        assert c.post("/topics/big/events", json={"data": "after"}).json() == {"ids": [2]}
        assert c.post("/v1/stream/big", content='{"ok":1}', headers=JSON).status_code == 204
    assert probe.failures == []
    assert len(probe.latencies) > 20
    slow = sorted(t for t in probe.latencies if t > 0.1)
    # A loaded machine may pause a probe once or twice; a parse on the loop would slow one probe per request.
    assert len(slow) <= 2, f"/healthz answers slower than 100 ms during hostile requests: {slow}"


async def test_a_batch_one_above_the_limit_is_refused_and_one_at_it_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/topics/b/events", json=[{}] * 1001)
    assert_error(r, 400, "invalid_input", "a batch holds at most 1000 events")
    r = await client.post("/topics/b/events", json=[{"data": i} for i in range(1000)])
    assert r.status_code == 200 and len(r.json()["ids"]) == 1000
    for bad in ("[{}, {}", "[{},]", "[{} {}]", "[{}] x", "[", "[,]"):
        assert_error(await client.post("/topics/b/events", content=bad, headers=JSON), 400, says="not valid JSON")
    r = await client.post("/topics/b/events", content=' [ {"data": 1} ,\n{"data" : 2} ] ', headers=JSON)
    assert r.json() == {"ids": [1001, 1002]}


# -- 4. input: integers -------------------------------------------------------------------------------------------


async def test_limit_after_and_last_event_id_are_strict_bounded_integers(client: httpx.AsyncClient) -> None:
    await client.post("/topics/t/events", json=[{"data": i} for i in range(3)])
    # The cap was once checked on the first 6 characters only: 000001999999 read 1999999 events.
    for limit in ("000001999999", "1001", "0", "-1", "+5", "1e3", " 5", "5 ", "²", "٣", "1_0", "", "9" * 40):
        r = await client.get("/topics/t/events", params={"limit": limit}, headers=PAGE)
        assert_error(r, 400, "invalid_input", "limit must be an integer from 1 to 1000")
    r = await client.get("/topics/t/events", params={"limit": "2"}, headers=PAGE)
    assert [e["id"] for e in r.json()["events"]] == [1, 2]
    for after in ("-1", "1.5", "٣", "²", "0x1", "9" * 19, "9" * 400):
        r = await client.get("/topics/t/events", params={"after": after}, headers=PAGE)
        assert_error(r, 400, "invalid_cursor")
        r = await client.get("/topics/t/events", headers={**PAGE, "last-event-id": after.encode()})
        assert_error(r, 400, "invalid_cursor")
        async with client.stream("GET", "/topics/t/events", params={"after": after}) as r:
            assert r.status_code == 400
    r = await client.get("/topics/t/events", params={"after": "2"}, headers=PAGE)
    assert [e["id"] for e in r.json()["events"]] == [3]
    for limit in ("0", "1001", "\u0661"):
        assert_error(await client.get("/topics", params={"limit": limit}), 400, "invalid_input")
    r = await client.get("/topics/t/events", params={"format": "ai-sdk", "after": "1.٣"})
    assert_error(r, 400, "invalid_cursor")


async def test_durable_integers_are_strict(client: httpx.AsyncClient) -> None:
    assert (await client.put("/v1/stream/d", headers=JSON)).status_code == 201
    for epoch in ("\u0661", "-1", "1.0", "9007199254740992", "9" * 30):
        r = await client.post(
            "/v1/stream/d",
            content="1",
            headers={**JSON, "producer-id": "p", "producer-epoch": epoch.encode(), "producer-seq": "0"},
        )
        assert r.status_code == 400, (epoch, r.text)
    assert (await client.put("/v1/stream/e", headers={**JSON, "stream-ttl": "٣".encode()})).status_code == 400


# -- 4. input: text UTF-8 cannot encode, and nesting ------------------------------------------------------------


async def test_a_lone_surrogate_is_a_400_and_a_pair_is_text(client: httpx.AsyncClient, hub: Hub) -> None:
    for body in (
        r'{"data": "\ud800"}',
        r'{"data": "x\udfff"}',
        r'{"data": {"\uDBFF": 1}}',
        r'[{"data": 1}, {"data": ["\ud800"]}]',
        r'{"event": "e", "data": "\ud83d"}',  # a high surrogate without its low one
    ):
        r = await client.post("/topics/s/events", content=body, headers=JSON)
        assert_error(r, 400, "invalid_input", "lone surrogate")
    r = await client.post("/topics/s/events", content=b'{"data": "\xed\xa0\x80"}', headers=JSON)  # raw surrogate
    assert_error(r, 400, "invalid_input", "not UTF-8")
    with pytest.raises(TopicNotFound):  # nothing was written
        await hub.info("s")
    # An escaped backslash before u is text, and a pair is one character.
    r = await client.post("/topics/s/events", content=r'[{"data": "\\ud800"}, {"data": "\ud83d\ude00"}]', headers=JSON)
    assert r.json() == {"ids": [1, 2]}
    page = (await client.get("/topics/s/events?after=0", headers=PAGE)).json()
    assert [json.loads(e["data"]) for e in page["events"]] == ["\\ud800", "\U0001f600"]


async def test_a_streamed_publish_refuses_a_lone_surrogate_or_deep_line_by_its_number(
    client: httpx.AsyncClient,
) -> None:
    for bad, says in ((r'{"data": "\ud800"}', "lone surrogate"), ('{"data": ' + nested(100) + "}", "nested more")):
        body = '{"data": 1}\n' + bad + '\n{"data": 3}\n'
        r = await client.post("/topics/nd/events", content=body, headers=NDJSON)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["line"] == 2 and says in r.json()["error"]["message"], r.json()
    page = (await client.get("/topics/nd/events?after=0", headers=PAGE)).json()
    assert [e["data"] for e in page["events"]] == ["1", "1"]


async def test_a_lone_surrogate_in_an_agent_body_is_a_400_not_a_failed_run(client: httpx.AsyncClient) -> None:
    for path in ("/agents/echo", "/chat/echo", "/ag-ui/echo"):
        r = await client.post(path, content=r'{"q": "\ud800", "messages": []}', headers=JSON)
        assert_error(r, 400, "invalid_input", "lone surrogate")
    r = await client.post("/agents/echo", content=r'{"q": "\ud83d\ude00"}', headers=JSON)
    assert r.json()["status"] == "completed" and r.json()["result"] == {"got": {"q": "\U0001f600"}}


async def test_a_lone_surrogate_to_durable_streams_leaves_the_sqlite_writer_alive(tmp_path: Path) -> None:
    hub = make_hub(f"sqlite:///{tmp_path / 'hub.db'}")
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        assert (await c.put("/v1/stream/d", headers=JSON)).status_code == 201
        for body in (r'"\ud800"', r'["ok", "\udc00"]', r'{"\ud800": 1}'):
            r = await c.post("/v1/stream/d", content=body, headers=JSON)
            assert_error(r, 400, "invalid_input", "lone surrogate")
        r = await c.put("/v1/stream/e", content=r'["\ud800"]', headers=JSON)
        assert_error(r, 400, "invalid_input", "lone surrogate")
        # The writer thread still writes, for the stream and for the topics.
        assert (await c.post("/v1/stream/d", content='["a", "b"]', headers=JSON)).status_code == 204
        assert (await c.post("/topics/t/events", json={"data": "é"})).json() == {"ids": [1]}
        read = await c.get("/v1/stream/d", params={"offset": "-1"})
        assert read.json() == ["a", "b"]


async def test_an_agent_body_of_more_than_100000_values_is_a_413(client: httpx.AsyncClient) -> None:
    for n in (100_001, 200_000):  # one on the loop (below 256 KiB), one in a worker process
        body = json.dumps({"message": "hi", "x": [0] * (n - 3)})  # the object, "hi" and the array: 3 values more
        r = await client.post("/agents/echo", content=body, headers=JSON)
        assert_error(r, 413, "event_too_large", "holds more than 100000 JSON values")
    r = await client.post("/agents/echo", content=json.dumps({"x": [0] * 99_998}), headers=JSON)
    assert r.status_code == 200 and r.json()["status"] == "completed"


async def test_nesting_deeper_than_100_is_a_400(client: httpx.AsyncClient) -> None:
    # The outer object is level 1: data may hold 99 more.
    r = await client.post("/topics/n/events", content='{"data": ' + nested(99) + "}", headers=JSON)
    assert r.status_code == 200, r.text
    for body in (
        '{"data": ' + nested(100) + "}",
        nested(101),
        '{"data": ' + nested(50_000) + "}",  # too deep for json.loads itself
        '{"data": ' + '{"a":' * 120 + "1" + "}" * 120 + "}",
    ):
        r = await client.post("/topics/n/events", content=body, headers=JSON)
        assert_error(r, 400, "invalid_input", "nested more than 100 deep")
    r = await client.post("/agents/echo", content='{"q": ' + nested(150) + "}", headers=JSON)
    assert_error(r, 400, "invalid_input", "nested more than 100 deep")
    assert (await client.put("/v1/stream/nest", headers=JSON)).status_code == 201
    r = await client.post("/v1/stream/nest", content=nested(101), headers=JSON)
    assert_error(r, 400, "invalid_input", "nested more than 100 deep")


# -- 4. input: idempotency, HEAD, shadowed names ------------------------------------------------------------------


async def test_an_idempotency_key_reused_with_another_payload_is_a_422(client: httpx.AsyncClient) -> None:
    key = {"idempotency-key": "k-1"}
    assert (await client.post("/topics/i/events", json={"data": 1}, headers=key)).json() == {"ids": [1]}
    assert (await client.post("/topics/i/events", json={"data": 1}, headers=key)).json() == {"ids": [1]}
    r = await client.post("/topics/i/events", json={"data": 2}, headers=key)
    assert_error(r, 422, "idempotency_conflict")


async def test_head_on_events_answers_headers_without_a_stream(client: httpx.AsyncClient, hub: Hub) -> None:
    await client.post("/topics/h/events", json={"data": 1})
    r = await asyncio.wait_for(client.head("/topics/h/events"), 5)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert hub.subscribers("h") == 0  # no subscription was held for it, not even for a moment after
    r = await client.head("/topics/h/events", headers=PAGE)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert (await client.head("/topics/h/events", headers={"last-event-id": "x"})).status_code == 400
    assert (await client.head("/topics/h/events?limit=0", headers=PAGE)).status_code == 400
    assert (await client.head("/topics/h/events?format=nope")).status_code == 400
    assert (await client.head("/topics/bad name/events")).status_code == 400
    metrics = (await client.get("/metrics")).text
    assert "ssehub_subscribers 0" in metrics or "ssehub_subscribers " not in metrics


async def test_topic_names_the_routes_would_shadow_are_refused(client: httpx.AsyncClient) -> None:
    for topic in ("a/events", "a/b/close", "x/events"):
        r = await client.post(f"/topics/{topic}/events", json={"data": 1})
        assert_error(r, 400, "invalid_topic", "may not end in /events or /close")
        assert_error(await client.get(f"/topics/{topic}/events", headers=PAGE), 400, "invalid_topic")
    # Only the two route suffixes are taken; names that merely contain them are topics like any other.
    for topic in ("events", "close", "a/eventsx", "a/events/b", "a-close"):
        assert (await client.post(f"/topics/{topic}/events", json={"data": 1})).status_code == 200, topic


# -- 4. input: what a run stores ----------------------------------------------------------------------------------


async def test_a_run_result_above_the_cap_fails_the_run_said_aloud(client: httpx.AsyncClient) -> None:
    # Under max_event_bytes (1 MiB), above max_result_bytes (256 KiB).
    doc = (await client.post("/agents/huge", json={"size": 300_000})).json()
    assert doc["status"] == "failed" and doc["result"] is None
    assert "result of 300013 bytes (as JSON) is above the limit of 262144" in doc["error"]["message"]
    info = (await client.get(f"/topics/runs/{doc['id']}")).json()
    assert "result" not in info["meta"]
    doc = (await client.post("/agents/huge", json={"size": 1000})).json()
    assert doc["status"] == "completed" and len(doc["result"]) == 1000


async def test_run_metadata_is_capped() -> None:
    hub = make_hub(max_meta_bytes=1000)
    async with serve_app(create_app(hub)):
        with pytest.raises(EventTooLarge, match=r"metadata of \d+ bytes \(as JSON\) is above the limit of 1000"):
            await hub.runs.start_run("echo", {}, meta={"note": "x" * 2000})
        run = await hub.runs.start_run("echo", {}, meta={"note": "x" * 10})
        assert (await hub.runs.wait(run)).meta["note"] == "x" * 10


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_parsing_workers_end_with_the_server(server: Callable[..., ServerProcess], sig: int) -> None:
    srv = server("--store", "memory://", "--no-access-log")
    assert srv.proc is not None
    big = "[" + ",".join(['{"data": 1}'] * 30_000) + "]"  # above 256 KiB: parsed in a worker process
    r = httpx.post(f"{srv.url}/topics/w/events", content=big, headers=JSON, timeout=30)
    assert_error(r, 400, says="a batch holds at most 1000 events")
    workers = [pid for pid in _children(srv.proc.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert workers, "no worker process was started"
    srv.proc.send_signal(sig)
    srv.proc.wait(15)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived its server"


def test_max_result_bytes_is_an_option_of_serve(server: Callable[..., ServerProcess]) -> None:
    srv = server("--store", "memory://", "--demo", "--max-result-bytes", "50", env={"SSEHUB_DEMO_DELAY": "0"})
    doc = httpx.post(f"{srv.url}/agents/chat", json={"message": "hi"}, timeout=60).json()
    assert doc["status"] == "failed" and "is above the limit of 50" in doc["error"]["message"], doc


async def test_large_bodies_parsed_at_once_are_bounded(hub: Hub) -> None:
    app = create_app(hub)
    app.offload.queue = 1
    big = "[" + ",".join(['{"data": 1}'] * 30_000) + "]"  # above 256 KiB: parsed in a worker process
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as c:
        answers = await asyncio.gather(*(c.post("/topics/q/events", content=big, headers=JSON) for _ in range(6)))
    statuses = sorted(r.status_code for r in answers)
    assert 400 in statuses and 429 in statuses, statuses  # one parsed at a time; the others told to retry
    for r in answers:
        assert_error(r, r.status_code, "invalid_input" if r.status_code == 400 else "too_many_requests")
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1"
