"""The Python client against real `ssehub serve` processes, through real TCP proxies that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

import ssehub
from ssehub import (
    AsyncClient,
    Client,
    Event,
    EventTooLarge,
    InvalidTopic,
    ServerError,
    TopicClosed,
    TopicNotFound,
    TransportError,
    Unauthorized,
)
from ssehub.asgi import create_app
from ssehub.asgi.responses import error_response
from ssehub.client import backoff
from support import ServerProcess, free_port, serve_app

Start = Callable[..., ServerProcess]


class Proxy:
    """A TCP proxy on a real socket; `limit(n)` says how many bytes of connection n's answer to pass.

    None passes everything. A number cuts both sides after that many bytes (a dropped network).
    `hold=True` instead swallows the rest of the answer and keeps the connection open, as a
    stalled network does, so the client's read timeout fires after the server did the work.
    """

    def __init__(self, upstream_port: int, limit: Callable[[int], int | None], *, hold: bool = False) -> None:
        self.upstream_port = upstream_port
        self.limit = limit
        self.hold = hold
        self.connections = 0
        self.cuts = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int | None) -> None:
        passed = 0
        while data := await reader.read(65536):
            if limit is not None and passed + len(data) > limit:
                if limit > passed:
                    writer.write(data[: limit - passed])
                    await writer.drain()
                self.cuts += 1
                if self.hold:
                    while await reader.read(65536):
                        pass  # swallow the answer; the client gives up on its own
                return
            passed += len(data)
            writer.write(data)
            await writer.drain()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        n = self.connections
        self.connections += 1
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up = asyncio.create_task(self._pipe(client_r, upstream_w, None))
        down = asyncio.create_task(self._pipe(upstream_r, client_w, self.limit(n)))
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            for w in (client_w, upstream_w):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Proxy]:
        def track(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            task = asyncio.create_task(self._handle(r, w))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        srv = await asyncio.start_server(track, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            srv.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await srv.wait_closed()


async def collect(
    client: AsyncClient, topic: str, after: int | None, into: list[Event], seen: dict[int, asyncio.Event] | None = None
) -> None:
    """Append the topic's events to `into`; `seen[n]` is set once n events arrived."""
    async for event in client.subscribe(topic, after=after):
        into.append(event)
        if seen and len(into) in seen:
            seen[len(into)].set()


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "text": f"event number {i} " + "x" * (i % 37)}


async def test_subscriber_cut_at_random_points_gets_every_event_once_in_order(server: Start) -> None:
    srv = server("--store", "memory://", "--retry", "20")
    rng = random.Random(1234)
    # The first connection passes its headers, so the subscription is established; after
    # that every connection is cut somewhere, in the headers, mid-frame or between frames.
    proxy = Proxy(srv.port, lambda n: 600 if n == 0 else rng.randint(1, 1500))
    total = 240
    got: list[Event] = []
    async with proxy.running(), AsyncClient(proxy.url, retry_delay=0.01) as sub, AsyncClient(srv.url) as pub:
        reader = asyncio.create_task(collect(sub, "cuts", 0, got))
        for i in range(1, total + 1, 8):
            await pub.publish_many("cuts", [("tick", payload(j)) for j in range(i, i + 8)])
            await asyncio.sleep(0.005)
        await pub.close_topic("cuts")
        await asyncio.wait_for(reader, 60)
    assert [e.id for e in got] == list(range(1, total + 1))
    assert [e.json() for e in got] == [payload(i) for i in range(1, total + 1)]
    assert {e.event for e in got} == {"tick"}
    print(f"{proxy.cuts} cuts over {proxy.connections} connections")
    assert proxy.cuts >= 10, proxy.cuts  # the stream really was cut many times


async def test_subscriber_survives_server_restart_with_sqlite(server: Start, tmp_path: Any) -> None:
    srv = server("--store", f"sqlite:///{tmp_path / 'hub.db'}", "--retry", "50")
    got: list[Event] = []
    async with AsyncClient(srv.url, retry_delay=0.05) as client:
        ten = asyncio.Event()
        reader = asyncio.create_task(collect(client, "restart", 0, got, {10: ten}))
        await client.publish_many("restart", [("tick", payload(i)) for i in range(1, 41)])
        await asyncio.wait_for(ten.wait(), 30)
        await asyncio.to_thread(srv.restart)  # SIGTERM: the server drains its streams, then a new process
        await client.publish_many("restart", [("tick", payload(i)) for i in range(41, 81)])
        await asyncio.to_thread(srv.kill)  # and once more without any warning
        await asyncio.to_thread(srv.start)
        await client.publish_many("restart", [("tick", payload(i)) for i in range(81, 101)])
        await client.close_topic("restart")
        await asyncio.wait_for(reader, 60)
    assert [e.id for e in got] == list(range(1, 101))
    assert [e.json() for e in got] == [payload(i) for i in range(1, 101)]


async def test_publish_timed_out_after_append_is_appended_once(server: Start) -> None:
    srv = server("--store", "memory://")
    # The first two connections forward the request and swallow the answer: the server has
    # appended, the client only sees its read timeout and tries again with the same key.
    proxy = Proxy(srv.port, lambda n: 0 if n < 2 or 3 <= n < 5 else None, hold=True)
    async with proxy.running():
        # One client per call, as each would otherwise reuse the last (healthy) pooled connection.
        async with AsyncClient(proxy.url, timeout=0.5, retry_delay=0.01) as client:
            assert await client.publish("once", "log", {"line": 1}) == 1
        assert proxy.connections == 3
        async with AsyncClient(proxy.url, timeout=0.5, retry_delay=0.01) as client:
            assert await client.publish_many("once", [("log", {"line": 2}), ("log", {"line": 3})]) == [2, 3]
        assert proxy.connections == 6
    async with httpx.AsyncClient(base_url=srv.url) as http:
        page = (await http.get("/topics/once/events?after=0", headers={"accept": "application/json"})).json()
    assert [(e["id"], json.loads(e["data"])) for e in page["events"]] == [(i, {"line": i}) for i in (1, 2, 3)]
    assert page["last_id"] == 3


async def test_publish_gives_up_after_its_retries(server: Start) -> None:
    srv = server("--store", "memory://")
    proxy = Proxy(srv.port, lambda n: 0, hold=True)
    async with proxy.running(), AsyncClient(proxy.url, timeout=0.3, retries=2, retry_delay=0.01) as client:
        with pytest.raises(TransportError, match="timed out"):
            await client.publish("stuck", "log", 1)
    assert proxy.connections == 3
    async with AsyncClient(srv.url) as client:
        assert (await client.topic("stuck")).last_id == 1  # every attempt had the same key: one event


async def test_live_subscribe_reset_and_idempotency_key(server: Start) -> None:
    srv = server("--store", "memory://", "--max-events", "5")
    async with AsyncClient(srv.url) as client:
        for i in range(1, 11):
            await client.publish("trim", "n", i)
        assert await client.publish("trim", "n", 99, idempotency_key="k") == 11
        assert await client.publish("trim", "n", 99, idempotency_key="k") == 11
        # Retention kept 7..11: a reader from the start is told so, then reads what exists.
        got: list[Event] = []
        six = asyncio.Event()
        reader = asyncio.create_task(collect(client, "trim", 0, got, {6: six}))
        await asyncio.wait_for(six.wait(), 30)
        assert got[0].event == "reset" and got[0].json() == {"first_id": 7, "requested_after": 0}
        assert [(e.id, e.json()) for e in got[1:]] == [(7, 7), (8, 8), (9, 9), (10, 10), (11, 99)]
        # after=None: only what comes next.
        live: list[Event] = []
        live_reader = asyncio.create_task(collect(client, "trim", None, live))
        await asyncio.sleep(0.2)
        await client.publish("trim", "n", 12)
        await client.close_topic("trim")
        await asyncio.wait_for(asyncio.gather(reader, live_reader), 30)
        assert [(e.id, e.json()) for e in live] == [(12, 12)]
        assert [e.id for e in got][-1] == 12


async def test_typed_errors(server: Start) -> None:
    srv = server("--store", "memory://", "--token", "s3cret-0123456789", "--max-event-bytes", "100")
    async with (
        AsyncClient(srv.url, token="s3cret-0123456789") as client,
        AsyncClient(srv.url, token="wrong") as intruder,
    ):
        with pytest.raises(TopicNotFound):
            await client.topic("nope")
        with pytest.raises(TopicNotFound):
            await client.delete_topic("nope")
        with pytest.raises(InvalidTopic):
            await client.publish("bad topic", "x", 1)
        with pytest.raises(Unauthorized) as unauthorised:
            await intruder.publish("t", "x", 1)
        assert unauthorised.value.status == 401
        with pytest.raises(EventTooLarge):
            await client.publish("t", "x", "y" * 200)
        await client.publish("t", "x", 1)
        await client.close_topic("t", "failed")
        with pytest.raises(TopicClosed):
            await client.publish("t", "x", 2)
        with pytest.raises(ssehub.InvalidInput):
            await client.close_topic("t", "whatever")
        assert [e.id async for e in client.subscribe("t", after=0)] == [1]
        assert [e.id async for e in client.subscribe("t", after=1)] == []  # a 204: the end
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=1, retry_delay=0.01) as nowhere:
        with pytest.raises(TransportError, match="connection refused"):
            await nowhere.publish("t", "x", 1)
        with pytest.raises(TransportError, match="connection refused"):
            async for _ in nowhere.subscribe("t", after=0):
                pass


async def test_a_server_that_is_not_ssehub() -> None:
    app = Starlette(
        routes=[Route("/{path:path}", lambda request: HTMLResponse("<h1>login</h1>"), methods=["GET", "POST"])]
    )
    async with serve_app(app) as url, AsyncClient(url) as client:
        with pytest.raises(ServerError, match="not an event stream"):
            async for _ in client.subscribe("t", after=0):
                pass
        with pytest.raises(ServerError):
            await client.publish("t", "x", 1)


def test_sync_client(server: Start) -> None:
    srv = server("--store", "memory://")
    with Client(srv.url) as client:
        assert client.publish("sync/a", "log", {"line": 1}) == 1
        assert client.publish_many("sync/a", [("log", {"line": 2}), ("done", None)]) == [2, 3]
        client.publish("sync/b", "log", 1)
        assert client.topic("sync/a").last_id == 3
        assert [t.name for t in client.topics("sync/")] == ["sync/a", "sync/b"]
        assert client.close_topic("sync/a").status == "completed"
        events = list(client.subscribe("sync/a", after=1))
        assert [(e.id, e.event, e.json()) for e in events] == [(2, "log", {"line": 2}), (3, "done", None)]
        for event in client.subscribe("sync/b", after=0):  # leaving early closes the stream
            assert event.id == 1
            break
        client.delete_topic("sync/a")
        with pytest.raises(TopicNotFound):
            client.topic("sync/a")


def test_ctrl_c_in_a_waiting_sync_subscribe_raises_at_once_and_the_client_goes_on(server: Start) -> None:
    srv = server("--store", "memory://")
    with Client(srv.url) as client:
        client.publish("quiet", "log", 1)
        events = client.subscribe("quiet", after=0)
        assert next(events).id == 1
        # Ctrl-C while it waits for the next event: a real SIGINT, to the main thread as a terminal's would go.
        timer = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        timer.start()
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            next(events)
        assert time.monotonic() - began < 5
        events.close()
        # The interrupted stream is finished, and the client's loop serves what comes next.
        assert client.publish("quiet", "log", 2) == 2
        client.close_topic("quiet")
        assert [e.id for e in client.subscribe("quiet", after=1)] == [2]


async def test_leaving_a_subscription_early_closes_the_client_generators_under_it(server: Start) -> None:
    # One left to the garbage collector is closed in a task of its own, which a loop that stops
    # next (the sync client's, after Ctrl-C) never runs: "Task was destroyed but it is pending".
    srv = server("--store", "memory://", "--demo", env={"SSEHUB_DEMO_DELAY": "0.05"})
    hooks = sys.get_asyncgen_hooks()
    collected: list[str] = []

    def finalizer(agen: Any) -> None:
        collected.append(agen.__qualname__)
        assert hooks.finalizer is not None
        hooks.finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        async with AsyncClient(srv.url) as client:
            await client.publish("early", "log", 1)
            run_id = (await client.start_run("chat", {"message": "hi"}))["id"]
            for events in (client.subscribe("early", after=0), client.subscribe_run(run_id)):
                assert (await anext(events)).id == 1
                await events.aclose()  # what leaving an `async for` early does
                del events
            await client.cancel_run(run_id)
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert [name for name in collected if name.startswith("AsyncClient.")] == []


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert backoff(0, 1.0, 30) == 0
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (1000, 30.0)]:
        delays = [backoff(failures, 1.0, 30) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100


async def test_subscribe_and_publish_retry_through_5xx() -> None:
    hub = ssehub.Hub("memory://", ssehub.HubConfig(retry_ms=10))
    app = create_app(hub)
    failures = {"left": 3}

    async def flaky(scope: Any, receive: Any, send: Any) -> None:
        # A real hub behind a front that answers 503 to the first requests, as a busy proxy would.
        if scope["type"] == "http" and failures["left"] > 0:
            failures["left"] -= 1
            await error_response(503, "store_unavailable", "busy")(scope, receive, send)
            return
        await app(scope, receive, send)

    flaky.state = app.state  # type: ignore[attr-defined]  # serve_app drains the hub through it
    async with serve_app(flaky) as url, AsyncClient(url, retry_delay=0.01) as client:
        assert await client.publish("busy", "n", 1) == 1  # after two 503s
        failures["left"] = 2
        got = []
        async for event in client.subscribe("busy", after=0):
            got.append(event.id)
            if event.id == 1:
                await hub.publish("busy", "n", 2)
                await hub.close_topic("busy")
        assert got == [1, 2]
        failures["left"] = 1
        async with AsyncClient(url, retries=0) as impatient:
            with pytest.raises(ssehub.StoreUnavailable) as raised:
                await impatient.topic("busy")
        assert raised.value.status == 503


def test_public_names() -> None:
    for name in ssehub.__all__:
        assert getattr(ssehub, name) is not None
    assert {"AsyncClient", "Client", "TopicState", "Forbidden", "ServerError"} <= set(ssehub.__all__)
    assert issubclass(ssehub.Forbidden, ssehub.Unauthorized) and ssehub.Forbidden.status == 403
    assert issubclass(ssehub.ServerError, ssehub.SSEHubError)
