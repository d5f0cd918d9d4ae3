"""The one SSE response class, driven through the ASGI interface itself: what it sends, and when it stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ssehub.asgi.responses import DISCONNECT, EventSourceResponse, EventStream, error_response
from ssehub.sse import Decoder, ServerSentEvent

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": [(b"last-event-id", b"41")]}


class Peer:
    """The server's side of one connection: records what the response sends; `leave()` is the client hanging up."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def leave(self) -> None:
        self._gone.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def complete(self) -> bool:
        return bool(self.messages) and self.messages[-1] == {
            "type": "http.response.body",
            "body": b"",
            "more_body": False,
        }


async def run(response: EventSourceResponse, peer: Peer | None = None) -> Peer:
    peer = peer or Peer()
    async with asyncio.timeout(5):  # not wait_for: it returns normally if the response swallows its cancel
        await response(SCOPE, peer.receive, peer.send)
    return peer


async def test_items_of_every_kind() -> None:
    async def items() -> AsyncIterator[Any]:
        yield ServerSentEvent("one", event="tick", id="1")
        yield b"id: 2\ndata: already encoded\n\n"  # the hub's frames pass through as they are
        yield "plain"
        yield {"n": 3}

    peer = await run(EventSourceResponse(items(), retry_ms=1500, headers={"x-extra": "1"}))
    start = peer.messages[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (b"x-extra", b"1") in start["headers"]
    assert peer.body.startswith(b": ok\nretry: 1500\n\n")
    assert peer.complete
    events = Decoder().feed(peer.body)
    assert [(e.event, e.data, e.id) for e in events] == [
        ("tick", "one", "1"),
        ("message", "already encoded", "2"),
        ("message", "plain", "2"),
        ("message", '{"n":3}', "2"),
    ]


async def test_without_heartbeat_the_source_runs_in_the_response_task() -> None:
    tasks: set[asyncio.Task[Any] | None] = set()

    async def items() -> AsyncIterator[bytes]:
        tasks.add(asyncio.current_task())
        yield b"data: x\n\n"

    writer: set[asyncio.Task[Any] | None] = set()

    async def respond() -> Peer:
        writer.add(asyncio.current_task())
        peer = Peer()
        await EventSourceResponse(items(), heartbeat=None)(SCOPE, peer.receive, peer.send)
        return peer

    peer = await asyncio.create_task(respond())
    assert tasks == writer  # no second task per stream
    assert b": keep-alive" not in peer.body


async def test_heartbeats_while_the_source_is_quiet() -> None:
    async def items() -> AsyncIterator[str]:
        await asyncio.sleep(0.35)
        yield "late"

    peer = await run(EventSourceResponse(items(), heartbeat=0.1))
    assert peer.body.count(b": keep-alive\n\n") >= 2
    assert [e.data for e in Decoder().feed(peer.body)] == ["late"]


async def test_a_handler_sees_last_event_id_and_writes_with_backpressure() -> None:
    async def handler(stream: EventStream) -> None:
        await stream.send({"after": stream.last_event_id}, event="hello", id=42)
        await stream.comment("note")

    peer = await run(EventSourceResponse(handler))
    assert b": note\n\n" in peer.body
    event = Decoder().feed(peer.body)[0]
    assert (event.event, json.loads(event.data), event.id) == ("hello", {"after": "41"}, "42")


@pytest.mark.parametrize("heartbeat", [None, 15.0])
async def test_a_disconnect_cancels_the_source_and_runs_its_finally(heartbeat: float | None) -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                yield "tick"
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    peer = Peer()
    task = asyncio.create_task(run(EventSourceResponse(endless(), heartbeat=heartbeat), peer))
    while len(peer.messages) < 4:
        await asyncio.sleep(0.01)
    peer.leave()
    await task  # ends normally: a client that leaves is not an error
    assert closed.is_set()
    assert not peer.complete


@pytest.mark.parametrize("lost", [True, False])
async def test_a_server_that_reports_the_disconnect_needs_no_watcher_task(lost: bool) -> None:
    """With the DISCONNECT extension (`ssehub serve`'s server), the stream is one task: the server cancels it
    when the connection is lost, and says so; a cancel it did not say is someone else's and goes on up."""
    closed = asyncio.Event()

    async def idle() -> AsyncIterator[bytes]:
        try:
            yield b"data: x\n\n"
            await asyncio.sleep(3600)
        finally:
            closed.set()

    connection: dict[object, object] = {}
    scope = {**SCOPE, "extensions": {DISCONNECT: connection}}
    peer = Peer()
    task = asyncio.create_task(EventSourceResponse(idle(), heartbeat=None)(scope, peer.receive, peer.send))
    while len(peer.messages) < 3:
        await asyncio.sleep(0.01)
    assert connection["task"] is task
    assert asyncio.all_tasks() == {asyncio.current_task(), task}  # nothing waits on receive()
    if lost:
        connection["lost"] = True
    task.cancel()
    if lost:
        await task  # ends normally: a client that leaves is not an error
    else:
        with pytest.raises(asyncio.CancelledError):
            await task
    assert closed.is_set() and "task" not in connection
    assert not peer.complete


async def test_a_failing_source_ends_the_stream() -> None:
    async def items() -> AsyncIterator[str]:
        yield "before"
        raise RuntimeError("broken")

    peer = await run(EventSourceResponse(items()))
    assert [e.data for e in Decoder().feed(peer.body)] == ["before"]
    assert peer.complete


def test_a_heartbeat_must_be_positive() -> None:
    async def items() -> AsyncIterator[str]:
        yield ""

    with pytest.raises(ValueError, match="heartbeat must be positive"):
        EventSourceResponse(items(), heartbeat=0)


def test_the_deprecated_name_still_works() -> None:
    import ssehub.asgi.responses as responses

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: x\n\n"

    with pytest.warns(DeprecationWarning, match="EventStreamResponse is deprecated"):
        response = responses.EventStreamResponse(chunks(), retry_ms=10)
    assert isinstance(response, EventSourceResponse) and response.heartbeat is None


def test_error_response() -> None:
    response = error_response(429, "too_many_requests", "slow down", {"retry-after": "1"})
    assert response.status_code == 429
    assert json.loads(response.body) == {"error": {"code": "too_many_requests", "message": "slow down"}}
    assert response.headers["retry-after"] == "1"
