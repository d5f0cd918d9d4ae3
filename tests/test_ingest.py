"""Streaming ingest (`POST /topics/{t}/events` with `application/x-ndjson`), against real servers.

The streams are written by hand over a raw socket, one HTTP/1.1 chunk at a time, as the benchmark's
load generator and any agent in another language write them: so each test decides exactly what the
server has received when it looks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from ssehub import AsyncClient, Client
from ssehub.access import mint_token
from ssehub.asgi import create_app
from ssehub.client import StreamResult
from ssehub.exceptions import InvalidInput
from ssehub.hub import Hub
from support import Read, ServerProcess, eventually, read_sse, serve_app

Start = Callable[..., ServerProcess]

SECRET = "the-jwt-secret-of-the-ingest-tests-0123456789"


def line(data: Any, event: str | None = None) -> bytes:
    item: dict[str, Any] = {"data": data}
    if event is not None:
        item["event"] = event
    return json.dumps(item).encode() + b"\n"


class RawStream:
    """A chunked NDJSON POST written by hand: `send` writes one chunk, `finish` the last and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base: str, topic: str, headers: dict[str, str] | None = None) -> RawStream:
        url = urlsplit(base)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"POST /topics/{topic}/events HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
            f"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
        )
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def finish(self) -> tuple[int, dict[str, Any]]:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        return await self.answer()

    async def answer(self, timeout: float = 30) -> tuple[int, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = dict(h.lower().split(": ", 1) for h in lines[1:] if h)
            body = await self.reader.readexactly(int(headers["content-length"]))
        self.abort()
        return status, json.loads(body)

    def abort(self) -> None:
        self.writer.close()


async def stored(base: str, topic: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(f"{base}/topics/{topic}/events?limit=1000", headers={"accept": "application/json"})
    if page.status_code == 404:
        return []
    page.raise_for_status()
    events: list[dict[str, Any]] = page.json()["events"]
    return events


async def until_stored(base: str, topic: str, count: int, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while len(await stored(base, topic)) < count:
            await asyncio.sleep(0.02)


def stored_now(base: str, topic: str) -> list[dict[str, Any]]:
    """`stored` for the synchronous tests."""
    return asyncio.run(stored(base, topic))


@pytest.fixture
def hub_url(server: Start, tmp_path: Any) -> str:
    return server("--store", f"sqlite:///{tmp_path / 'hub.db'}").url


async def test_lines_reach_a_subscriber_while_the_post_is_open(hub_url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        seen = Read()
        reader = asyncio.create_task(read_sse(http, f"{hub_url}/topics/live/events?after=0", count=3, into=seen))
        stream = await RawStream.open(hub_url, "live")
        await stream.send(line("Hel", "token"))
        await eventually(lambda: len(seen.events) == 1, timeout=20)
        # A line cut in two pieces is appended once its end arrives; two lines in one piece are one batch.
        half = line("lo", "token")
        await stream.send(half[:7])
        await asyncio.sleep(0.3)
        assert len(seen.events) == 1
        await stream.send(half[7:] + b"\n" + line({"done": True}, "end"))  # a blank line is skipped
        await eventually(lambda: len(seen.events) == 3, timeout=20)
        assert [(e.id, e.event, e.data) for e in seen.events] == [
            ("1", "token", '"Hel"'),
            ("2", "token", '"lo"'),
            ("3", "end", '{"done":true}'),
        ]
        status, body = await stream.finish()
        await reader
    assert (status, body) == (200, {"first_id": 1, "last_id": 3, "count": 3, "lines": 4, "ranges": [[1, 3]]})


async def test_the_answer_lists_the_streams_own_ids_when_another_publisher_writes_between_its_lines(
    hub_url: str,
) -> None:
    stream = await RawStream.open(hub_url, "shared")
    await stream.send(line("a") + line("b"))
    await until_stored(hub_url, "shared", 2)
    async with httpx.AsyncClient(timeout=10) as http:
        other = await http.post(f"{hub_url}/topics/shared/events", json={"event": "message", "data": "other"})
    assert other.status_code == 200
    await stream.send(line("c"))
    status, body = await stream.finish()
    assert status == 200
    assert (body["first_id"], body["last_id"], body["count"], body["ranges"]) == (1, 4, 3, [[1, 2], [4, 4]])
    assert StreamResult.from_json(body).ids == (1, 2, 4)
    assert [e["data"] for e in await stored(hub_url, "shared")] == ['"a"', '"b"', '"other"', '"c"']


async def test_a_bad_line_answers_400_with_its_number_and_keeps_the_lines_before_it(hub_url: str) -> None:
    stream = await RawStream.open(hub_url, "bad")
    await stream.send(line(1) + line(2))
    await stream.send(line(3) + b'{"data": 4, "id": 9}\n' + line(5))
    status, body = await stream.answer()
    assert status == 400
    assert body["error"]["line"] == 4 and body["error"]["message"].startswith("line 4: unknown event fields")
    assert (body["first_id"], body["last_id"], body["count"], body["lines"]) == (1, 3, 3, 3)
    assert [e["data"] for e in await stored(hub_url, "bad")] == ["1", "2", "3"]

    for bad, code in ((b"not json\n", "invalid_input"), (b'{"event": "no spaces", "data": 1}\n', "invalid_input")):
        again = await RawStream.open(hub_url, "bad")
        await again.send(line("x") + bad)
        status, body = await again.answer()
        assert (status, body["error"]["code"], body["error"]["line"], body["count"]) == (400, code, 2, 1)
    assert len(await stored(hub_url, "bad")) == 5


async def test_a_retried_stream_with_its_key_stores_nothing_twice(hub_url: str) -> None:
    key = {"idempotency-key": "answer-1"}
    lines = [line(f"t{i}", "token") for i in range(1, 9)]
    first = await RawStream.open(hub_url, "retry", key)
    await first.send(b"".join(lines[0:3]))
    await first.send(b"".join(lines[3:5]))
    await first.send(lines[5])
    await until_stored(hub_url, "retry", 6)
    first.abort()  # the connection breaks before the end: the client does not know what was stored

    # The retry sends everything again, in other pieces: one straddling the first attempt's batches.
    second = await RawStream.open(hub_url, "retry", key)
    await second.send(lines[0])
    await second.send(b"".join(lines[1:7]))
    await second.send(lines[7])
    status, body = await second.finish()
    assert (status, body) == (200, {"first_id": 1, "last_id": 8, "count": 8, "lines": 8, "ranges": [[1, 8]]})
    # And once more, all in one piece: the whole stream is stored, nothing is appended.
    third = await RawStream.open(hub_url, "retry", key)
    await third.send(b"".join(lines))
    assert await third.finish() == (200, {"first_id": 1, "last_id": 8, "count": 8, "lines": 8, "ranges": [[1, 8]]})
    assert [e["data"] for e in await stored(hub_url, "retry")] == [f'"t{i}"' for i in range(1, 9)]
    # A "retry" whose first line is not the first attempt's is not one: 422, and nothing is written.
    other = await RawStream.open(hub_url, "retry", key)
    await other.send(line("changed") + lines[1])
    status, body = await other.answer()
    assert (status, body["error"]["code"], body["error"]["line"], body["count"]) == (422, "idempotency_conflict", 1, 0)
    assert len(await stored(hub_url, "retry")) == 8


async def test_a_topic_closed_meanwhile_ends_the_stream_with_409(hub_url: str) -> None:
    stream = await RawStream.open(hub_url, "closing")
    await stream.send(line(1))
    await until_stored(hub_url, "closing", 1)
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.post(f"{hub_url}/topics/closing/close")).raise_for_status()
    await stream.send(line(2))
    status, body = await stream.answer()
    assert (status, body["error"]["code"], body["error"]["line"], body["count"]) == (409, "topic_closed", 2, 1)


async def test_a_stream_above_the_cap_answers_413_after_appending_what_fit(server: Start) -> None:
    srv = server("--store", "memory://", "--max-stream-bytes", "1000", "--max-event-bytes", "200")
    stream = await RawStream.open(srv.url, "big")
    ten = b"".join(line(f"{i:02d}" + "x" * 40) for i in range(10))
    fit = 1000 // (len(ten) // 10)  # the whole lines below the cap
    await stream.send(ten)
    await stream.send(ten)
    status, body = await stream.answer()
    assert (status, body["error"]["code"], body["count"], body["lines"]) == (413, "event_too_large", fit, fit)
    assert body["error"]["line"] == fit + 1 and "max-stream-bytes" in body["error"]["message"]
    assert len(await stored(srv.url, "big")) == fit

    # Each line is still bound by the largest event.
    one = await RawStream.open(srv.url, "big")
    await one.send(line("ok") + line("y" * 300))
    status, body = await one.answer()
    assert (status, body["error"]["line"], body["count"]) == (413, 2, 1)


async def test_an_idle_stream_is_answered_408(server: Start) -> None:
    srv = server("--store", "memory://", "--stream-idle-timeout", "1")
    stream = await RawStream.open(srv.url, "idle")
    await stream.send(line("only"))
    status, body = await stream.answer(timeout=30)
    assert (status, body["error"]["code"], body["count"]) == (408, "stream_idle_timeout", 1)


async def test_a_draining_hub_refuses_new_streams_and_ends_open_ones_with_503() -> None:
    hub = Hub("memory://")
    app = create_app(hub)
    async with serve_app(app) as base:
        open_stream = await RawStream.open(base, "drain")
        await open_stream.send(line(1))
        await eventually(lambda: hub.stats.events_published == 1, timeout=20)
        hub.drain()
        status, body = await open_stream.answer()
        assert (status, body["error"]["code"], body["count"]) == (503, "draining", 1)
        late = await RawStream.open(base, "drain")
        await late.send(line(2))
        status, body = await late.answer()
        assert (status, body["error"]["code"]) == (503, "draining")


async def test_publishing_a_stream_needs_the_publish_right(server: Start) -> None:
    srv = server("--store", "memory://", "--jwt-secret", SECRET)
    reader = mint_token(SECRET, subscribe=["chat/*"], ttl=60)
    writer = mint_token(SECRET, publish=["chat/*"], ttl=60)
    cases = [({}, "chat/1", 401), ({"authorization": f"Bearer {reader}"}, "chat/1", 403)]
    cases.append(({"authorization": f"Bearer {writer}"}, "other", 403))
    for headers, topic, expected in cases:
        stream = await RawStream.open(srv.url, topic, headers)
        await stream.send(line("x"))
        status, body = await stream.answer()
        assert status == expected, body
    stream = await RawStream.open(srv.url, "chat/1", {"authorization": f"Bearer {writer}"})
    await stream.send(line("x"))
    assert (await stream.finish())[0] == 200
    async with httpx.AsyncClient(timeout=10) as http:
        listing = await http.get(f"{srv.url}/topics/chat/1", headers={"authorization": f"Bearer {reader}"})
    assert listing.json()["last_id"] == 1  # only the allowed stream wrote


async def test_the_async_client_streams_events_a_reader_sees_before_the_end(hub_url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http, AsyncClient(hub_url) as client:
        seen = Read()
        reader = asyncio.create_task(read_sse(http, f"{hub_url}/topics/sdk/events?after=0", count=5, into=seen))
        async with client.stream("sdk") as s:
            for i in range(3):
                await s.send({"i": i}, event="token")
            await eventually(lambda: len(seen.events) == 3, timeout=20)  # the POST is still open
            await s.send("end", event="done")
            await s.send(None)
        await reader
    assert s.result == StreamResult(1, 5, 5, 5, (1, 2, 3, 4, 5))
    assert [e.event for e in seen.events] == ["token"] * 3 + ["done", "message"]

    async with AsyncClient(hub_url) as client:
        with pytest.raises(InvalidInput):
            async with client.stream("sdk") as s:
                await s.send(1, event="no spaces")
        # Refused before it is sent: the stream ends cleanly with nothing in it.
        assert s.result == StreamResult(None, None, 0, 0)


async def test_the_client_resends_a_stream_cut_by_a_restart_and_nothing_is_stored_twice(
    server: Start, tmp_path: Any
) -> None:
    srv = server("--store", f"sqlite:///{tmp_path / 'hub.db'}")
    client = AsyncClient(srv.url, retries=40, retry_delay=0.1, max_delay=0.5)
    async with client, client.stream("restart") as s:
        for i in range(3):
            await s.send(i)
        await until_stored(srv.url, "restart", 3)
        # SIGTERM: the hub drains, the open stream is answered 503 with what it stored; then a new process.
        await asyncio.to_thread(srv.restart)
        for i in range(3, 6):
            await s.send(i)
    assert s.result == StreamResult(1, 6, 6, 6, (1, 2, 3, 4, 5, 6))
    assert [e["data"] for e in await stored(srv.url, "restart")] == [str(i) for i in range(6)]


def test_the_sync_client_streams_with_the_same_key_safely(hub_url: str) -> None:
    with Client(hub_url) as client:
        for _ in range(2):  # the same key twice: the second stream is answered from the first
            with client.stream("sync", idempotency_key="k1") as s:
                s.send("a")
                s.send("b", event="e")
            assert s.result == StreamResult(1, 2, 2, 2, (1, 2))
        assert client.topic("sync").last_id == 2


def test_ssehub_publish_ndjson_streams_standard_input(hub_url: str) -> None:
    stdin = '{"event": "token", "data": "a"}\n\n{"data": {"n": 2}}\n'
    done = subprocess.run(
        [sys.executable, "-m", "ssehub", "publish", "cli", "--ndjson", "--url", hub_url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"first_id": 1, "last_id": 2, "count": 2, "lines": 2}
    assert [(e["event"], e["data"]) for e in stored_now(hub_url, "cli")] == [("token", '"a"'), ("message", '{"n":2}')]

    bad = subprocess.run(
        [sys.executable, "-m", "ssehub", "publish", "cli", "--ndjson", "--url", hub_url],
        input='{"data": 3}\n[1]\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "line 2" in bad.stderr, bad.stderr
    assert len(stored_now(hub_url, "cli")) == 3  # the line before the bad one was sent
