"""The HTTP interface over a real socket (uvicorn in the test's loop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from ssehub import Hub, HubConfig
from ssehub.asgi import create_app
from support import Read, read_sse, serve_app


@pytest.fixture
async def hub(store_url: str) -> Hub:
    return Hub(store_url, HubConfig(heartbeat=0.3, max_event_bytes=1000, max_batch=5, retry_ms=1500), max_events=20)


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        yield c


async def publish(client: httpx.AsyncClient, topic: str, *events: dict[str, object]) -> list[int]:
    body = list(events) if len(events) != 1 else events[0]
    r = await client.post(f"/topics/{topic}/events", json=body)
    assert r.status_code == 200, r.text
    ids: list[int] = r.json()["ids"]
    return ids


async def test_sse_headers_and_opening_bytes(client: httpx.AsyncClient) -> None:
    await publish(client, "t", {"data": 1})
    got = await read_sse(client, "/topics/t/events?after=0", count=1)
    assert got.status == 200
    assert got.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert got.headers["cache-control"] == "no-cache"
    assert got.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in got.headers
    assert got.raw.startswith(b": ok\nretry: 1500\n\n")
    assert got.retry == 1500


async def test_publish_forms_and_replay(client: httpx.AsyncClient) -> None:
    r = await client.post("/topics/a/b/events", content="plain text", headers={"content-type": "text/plain"})
    assert r.json() == {"ids": [1]}
    r = await client.post("/topics/a/b/events?event=log", content="named", headers={"content-type": "text/plain"})
    assert r.json() == {"ids": [2]}
    assert await publish(client, "a/b", {"event": "progress", "data": {"percent": 5}}) == [3]
    assert await publish(client, "a/b", {"data": "x"}, {"event": "e2", "data": [1, 2]}) == [4, 5]
    got = await read_sse(client, "/topics/a/b/events?after=0", count=5)
    assert [(e.id, e.event, e.data) for e in got.events] == [
        ("1", "message", "plain text"),
        ("2", "log", "named"),
        ("3", "progress", '{"percent":5}'),
        ("4", "message", '"x"'),
        ("5", "e2", "[1,2]"),
    ]


async def test_live_subscriber_gets_only_new_events(client: httpx.AsyncClient) -> None:
    await publish(client, "t", {"data": "old"})

    async def later() -> None:
        await asyncio.sleep(0.2)
        await publish(client, "t", {"data": "new"})

    task = asyncio.create_task(later())
    got = await read_sse(client, "/topics/t/events", count=1)
    await task
    assert [(e.id, e.data) for e in got.events] == [("2", '"new"')]


async def test_resume_with_last_event_id_wins_over_after(client: httpx.AsyncClient) -> None:
    await publish(client, "t", *({"data": i} for i in range(5)))
    got = await read_sse(client, "/topics/t/events?after=0", count=2, headers={"last-event-id": "3"})
    assert [e.id for e in got.events] == ["4", "5"]
    got = await read_sse(client, "/topics/t/events?after=4", count=1)
    assert [e.id for e in got.events] == ["5"]


async def test_closed_topic_stream_ends_then_204(client: httpx.AsyncClient, hub: Hub) -> None:
    await publish(client, "t", {"data": 1}, {"data": 2})

    async def close_soon() -> None:
        await asyncio.sleep(0.2)
        r = await client.post("/topics/t/close", json={"status": "failed"})
        assert r.json()["status"] == "failed"

    task = asyncio.create_task(close_soon())
    got = await read_sse(client, "/topics/t/events?after=0")
    await task
    assert got.ended and [e.id for e in got.events] == ["1", "2"]
    again = await read_sse(client, "/topics/t/events", headers={"last-event-id": "2"})
    assert again.status == 204
    # Not yet at the end: the rest, then the end of the response.
    rest = await read_sse(client, "/topics/t/events?after=1")
    assert rest.ended and [e.id for e in rest.events] == ["2"]
    assert hub.subscribers("t") == 0


async def test_heartbeat_when_idle(client: httpx.AsyncClient) -> None:
    got = await read_sse(client, "/topics/quiet/events", until_raw=b": keep-alive\n\n")
    assert got.status == 200 and got.events == []


async def test_many_subscribers_receive_identical_streams(client: httpx.AsyncClient, hub: Hub) -> None:
    readers = [asyncio.create_task(read_sse(client, "/topics/fan/events", count=30)) for _ in range(20)]
    while hub.subscribers("fan") < 20:
        await asyncio.sleep(0.01)
    assert (await client.get("/topics/fan")).status_code == 404  # subscribing does not create a topic
    for i in range(30):
        await publish(client, "fan", {"data": i})
    results = await asyncio.gather(*readers)
    expected = [(str(i + 1), str(i)) for i in range(30)]
    for r in results:
        assert [(e.id, e.data) for e in r.events] == expected


async def test_subscriber_count_in_topic_info(client: httpx.AsyncClient, hub: Hub) -> None:
    await publish(client, "t", {"data": 1})
    readers = [asyncio.create_task(read_sse(client, "/topics/t/events", count=1)) for _ in range(3)]
    while hub.subscribers("t") < 3:
        await asyncio.sleep(0.01)
    info = (await client.get("/topics/t")).json()
    assert info["subscribers"] == 3 and info["last_id"] == 1 and info["status"] == "open"
    await publish(client, "t", {"data": 2})
    await asyncio.gather(*readers)


async def test_trimmed_history_answers_reset(client: httpx.AsyncClient) -> None:
    await publish(client, "t", *({"data": i} for i in range(5)))
    for _ in range(5):
        await publish(client, "t", *({"data": i} for i in range(5)))
    got = await read_sse(client, "/topics/t/events?after=2", count=21)
    assert got.events[0].event == "reset"
    assert got.events[0].id == "10"
    assert json.loads(got.events[0].data) == {"first_id": 11, "requested_after": 2}
    assert [int(e.id) for e in got.events[1:]] == list(range(11, 31))
    page = (await client.get("/topics/t/events?after=2", headers={"accept": "application/json"})).json()
    assert page["reset"] is True and page["first_id"] == 11


async def test_cursor_beyond_the_end_answers_reset(client: httpx.AsyncClient) -> None:
    await publish(client, "t", {"data": 1})
    got = await read_sse(client, "/topics/t/events", count=2, headers={"last-event-id": "7"})
    assert got.events[0].event == "reset" and got.events[0].id == "0"
    assert got.events[1].id == "1"


async def test_json_paging(client: httpx.AsyncClient) -> None:
    await publish(client, "t", *({"event": "n", "data": i} for i in range(5)))
    r = await client.get("/topics/t/events?after=1&limit=2", headers={"accept": "application/json"})
    page = r.json()
    assert r.status_code == 200
    assert [(e["id"], e["event"], e["data"]) for e in page["events"]] == [(2, "n", "1"), (3, "n", "2")]
    assert page["next_after"] == 3 and page["last_id"] == 5 and page["status"] == "open"


async def test_idempotency_key_over_http(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        r = await client.post("/topics/t/events", json={"data": 1}, headers={"idempotency-key": "abc"})
        assert r.json() == {"ids": [1]}
    assert (await client.get("/topics/t")).json()["last_id"] == 1


async def test_delete_ends_open_streams(client: httpx.AsyncClient, hub: Hub) -> None:
    await publish(client, "t", {"data": 1})
    got = Read()
    reader = asyncio.create_task(read_sse(client, "/topics/t/events?after=0", into=got))
    while not got.events:  # the stream is open and has delivered what the topic held
        await asyncio.sleep(0.01)
    assert (await client.delete("/topics/t")).json() == {"deleted": "t"}
    await asyncio.wait_for(reader, 5)
    assert got.ended and [e.id for e in got.events] == ["1"]
    assert hub.subscribers("t") == 0
    assert (await client.get("/topics/t")).status_code == 404


async def test_topics_listing(client: httpx.AsyncClient) -> None:
    for name in ["jobs/1", "jobs/2", "other"]:
        await publish(client, name, {"data": 1})
    r = (await client.get("/topics?prefix=jobs/&limit=1")).json()
    assert [t["topic"] for t in r["topics"]] == ["jobs/1"] and r["next_after"] == "jobs/1"
    r = (await client.get("/topics?prefix=jobs/&after=jobs/1")).json()
    assert [t["topic"] for t in r["topics"]] == ["jobs/2"] and r["next_after"] is None


async def test_metrics_in_prometheus_text_format(client: httpx.AsyncClient, hub: Hub) -> None:
    await publish(client, "t", {"data": 1}, {"data": 2})
    reader = asyncio.create_task(read_sse(client, "/topics/t/events", count=1))
    while hub.subscribers("t") < 1:
        await asyncio.sleep(0.01)
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = set(r.text.splitlines())
    assert "ssehub_events_published_total 2.0" in lines
    assert "ssehub_subscribers 1.0" in lines
    assert "ssehub_active_topics 1.0" in lines
    assert "ssehub_streams_opened_total 1.0" in lines
    await publish(client, "t", {"data": 3})
    await reader


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


BAD_INPUT = [
    # (method, path, kwargs, status, code)
    (
        "POST",
        "/topics/t/events",
        {"content": "{", "headers": {"content-type": "application/json"}},
        400,
        "invalid_input",
    ),
    (
        "POST",
        "/topics/t/events",
        {"content": "[]", "headers": {"content-type": "application/json"}},
        400,
        "invalid_input",
    ),
    ("POST", "/topics/t/events", {"json": [{"data": i} for i in range(6)]}, 400, "invalid_input"),
    ("POST", "/topics/t/events", {"json": [{"data": 1}, 5]}, 400, "invalid_input"),
    ("POST", "/topics/t/events", {"json": {"data": 1, "id": 5}}, 400, "invalid_input"),
    ("POST", "/topics/t/events", {"json": {"event": "bad name", "data": 1}}, 400, "invalid_input"),
    ("POST", "/topics/t/events", {"json": {"event": 7, "data": 1}}, 400, "invalid_input"),
    ("POST", "/topics/t/events", {"json": {"event": "x\ny", "data": 1}}, 400, "invalid_input"),
    (
        "POST",
        "/topics/t/events",
        {"content": "a=1", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        415,
        "unsupported_media_type",
    ),
    (
        "POST",
        "/topics/t/events",
        {"content": b"\xff\xfe", "headers": {"content-type": "text/plain"}},
        400,
        "invalid_input",
    ),
    (
        "POST",
        "/topics/t/events",
        {"content": "x" * 1001, "headers": {"content-type": "text/plain"}},
        413,
        "event_too_large",
    ),
    ("POST", "/topics/t/events", {"json": {"data": "x" * 1000}}, 413, "event_too_large"),
    (
        "POST",
        "/topics/t/events",
        {"json": {"data": 1}, "headers": {"idempotency-key": "x" * 201}},
        400,
        "invalid_input",
    ),
    ("POST", "/topics/bad%20name/events", {"json": {"data": 1}}, 400, "invalid_topic"),
    ("POST", f"/topics/{'x' * 201}/events", {"json": {"data": 1}}, 400, "invalid_topic"),
    ("GET", "/topics/t/events", {"headers": {"last-event-id": "abc"}}, 400, "invalid_cursor"),
    ("GET", "/topics/t/events", {"headers": {"last-event-id": "-1"}}, 400, "invalid_cursor"),
    ("GET", "/topics/t/events?after=1.5", {}, 400, "invalid_cursor"),
    ("GET", "/topics/t/events?after=99999999999999999999999", {}, 400, "invalid_cursor"),
    ("GET", "/topics/t/events?limit=0", {"headers": {"accept": "application/json"}}, 400, "invalid_input"),
    ("GET", "/topics/t/events?after=99", {"headers": {"accept": "application/json"}}, 400, "invalid_cursor"),
    ("GET", "/topics/nope/events", {"headers": {"accept": "application/json"}}, 404, "not_found"),
    ("GET", "/topics/nope", {}, 404, "not_found"),
    ("POST", "/topics/nope/close", {}, 404, "not_found"),
    ("POST", "/topics/t/close", {"json": {"status": "weird"}}, 400, "invalid_input"),
    (
        "POST",
        "/topics/t/close",
        {"content": "{", "headers": {"content-type": "application/json"}},
        400,
        "invalid_input",
    ),
    ("DELETE", "/topics/nope", {}, 404, "not_found"),
    ("GET", "/topics?limit=5000", {}, 400, "invalid_input"),
    ("GET", "/nowhere", {}, 404, "not_found"),
    ("PUT", "/topics/t/events", {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), BAD_INPUT)
async def test_bad_input_gets_a_precise_error_and_changes_nothing(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    await publish(client, "t", {"data": "before"})
    r = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    info = (await client.get("/topics/t")).json()
    assert info["last_id"] == 1 and info["status"] == "open"
    assert (await client.get("/topics/nope")).status_code == 404


async def test_publish_to_closed_topic_is_409(client: httpx.AsyncClient) -> None:
    await publish(client, "t", {"data": 1})
    await client.post("/topics/t/close")
    r = await client.post("/topics/t/events", json={"data": 2})
    assert r.status_code == 409 and r.json()["error"]["code"] == "topic_closed"
    assert (await client.get("/topics/t")).json()["last_id"] == 1


async def test_token_guards_every_endpoint() -> None:
    hub = Hub("memory://", HubConfig(token="s3cret-0123456789"))
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/topics/t/events", json={"data": 1})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        r = await c.post("/topics/t/events", json={"data": 1}, headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401
        ok = {"authorization": "Bearer s3cret-0123456789"}
        assert (await c.post("/topics/t/events", json={"data": 1}, headers=ok)).json() == {"ids": [1]}
        assert (await c.get("/topics/t")).status_code == 401
        assert (await c.get("/topics/t", headers=ok)).status_code == 200
        assert (await c.delete("/topics/t")).status_code == 401
        assert (await c.post("/topics/t/close")).status_code == 401
        assert (await c.delete("/topics/t", headers=ok)).status_code == 200
        assert (await c.get("/healthz")).status_code == 200


async def test_mounted_under_a_prefix() -> None:
    hub = Hub("memory://")
    app = Starlette(routes=[Mount("/sse", create_app(hub))])
    # Starlette does not run a mounted app's lifespan: the host app runs the hub's.
    app.router.lifespan_context = hub.lifespan
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as c:
        assert (await c.post("/sse/topics/t/events", json={"data": 1})).json() == {"ids": [1]}
        got = await read_sse(c, "/sse/topics/t/events?after=0", count=1)
        assert got.events[0].data == "1"


async def test_middleware_that_edits_headers_in_place_sees_fresh_ones_on_every_stream() -> None:
    from starlette.types import Message, Receive, Scope, Send

    hub = Hub("memory://")
    inner = create_app(hub)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"].append((b"x-tag", b"1"))  # in place, as some middleware does
            await send(message)

        await inner(scope, receive, tagging_send if scope["type"] == "http" else send)

    app.state = inner.state  # type: ignore[attr-defined]  # serve_app drains the hub it finds there
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as c:
        await hub.publish("t", "message", 1)
        for _ in range(3):
            got = await read_sse(c, "/topics/t/events?after=0", count=1)
            assert got.headers.get_list("x-tag") == ["1"]
            assert got.headers.get_list("content-type") == ["text/event-stream; charset=utf-8"]
