"""Ad-hoc SSE responses (no topic) over a real socket: both styles, heartbeats, abort on disconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ssehub.asgi import EventSourceResponse, EventStream
from ssehub.sse import ServerSentEvent
from support import read_sse, serve_app


def build() -> tuple[Starlette, dict[str, Any]]:
    state: dict[str, Any] = {"aborted": asyncio.Event(), "closed": asyncio.Event()}

    async def generator(request: Request) -> Response:
        async def items() -> AsyncIterator[Any]:
            yield ServerSentEvent("one", event="tick", id="1")
            yield "plain text"
            yield {"n": 3}
            await asyncio.sleep(0.35)  # long enough for heartbeats
            yield ServerSentEvent("last", event="tick", id="4")

        return EventSourceResponse(items(), heartbeat=0.1, headers={"x-extra": "yes"})

    async def handler(request: Request) -> Response:
        async def write(stream: EventStream) -> None:
            await stream.send({"hello": "world"}, event="greeting", id=1)
            await stream.send(f"resumed after {stream.last_event_id}")

        return EventSourceResponse(write)

    async def endless(request: Request) -> Response:
        async def write(stream: EventStream) -> None:
            try:
                n = 0
                while True:
                    n += 1
                    await stream.send({"n": n}, id=n)
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                state["aborted"].set()  # "on abort"
                raise
            finally:
                state["closed"].set()

        return EventSourceResponse(write)

    async def failing(request: Request) -> Response:
        async def items() -> AsyncIterator[Any]:
            yield "before"
            raise RuntimeError("broken generator")

        return EventSourceResponse(items())

    app = Starlette(
        routes=[
            Route("/gen", generator),
            Route("/handler", handler),
            Route("/endless", endless),
            Route("/failing", failing),
        ]
    )
    return app, state


async def test_generator_style_with_headers_and_heartbeats() -> None:
    app, _ = build()
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        got = await read_sse(c, "/gen")
    assert got.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert got.headers["cache-control"] == "no-cache"
    assert got.headers["x-accel-buffering"] == "no"
    assert got.headers["x-extra"] == "yes"
    events, raw = got.events, got.raw
    assert got.ended and raw.startswith(b": ok\nretry: 2000\n\n")
    assert b": keep-alive\n\n" in raw
    assert [(e.event, e.data, e.id) for e in events] == [
        ("tick", "one", "1"),
        ("message", "plain text", "1"),  # ids are sticky, as in every EventSource
        ("message", '{"n":3}', "1"),
        ("tick", "last", "4"),
    ]


async def test_handler_style_sees_last_event_id() -> None:
    app, _ = build()
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        events = (await read_sse(c, "/handler", headers={"last-event-id": "7"})).events
    assert json.loads(events[0].data) == {"hello": "world"} and events[0].event == "greeting"
    assert events[1].data == "resumed after 7"


async def test_client_disconnect_aborts_the_handler() -> None:
    app, state = build()
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        got = (await read_sse(c, "/endless", count=3)).events
        await asyncio.wait_for(state["aborted"].wait(), 5)
        await asyncio.wait_for(state["closed"].wait(), 5)
    assert [json.loads(e.data)["n"] for e in got[:3]] == [1, 2, 3]


async def test_a_failing_generator_ends_the_stream_cleanly() -> None:
    app, _ = build()
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        got = await read_sse(c, "/failing")
        assert got.status == 200 and got.ended
        assert [e.data for e in got.events] == ["before"]
        assert (await c.get("/handler")).status_code == 200  # the server is fine
