"""No silent gaps: a cursor the log does not hold, or a log that Redis lost, is answered with `event: reset`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from ssehub import sse
from ssehub.asgi import create_app
from ssehub.config import HubConfig
from ssehub.events import NewEvent
from ssehub.hub import Hub
from ssehub.stores import Change, open_store
from ssehub.stores.redis import RedisStore
from support import RedisServer, ServerProcess, eventually, serve_app

Start = Callable[..., ServerProcess]


class Stream:
    """An SSE response read in the background: every event, resets included, in order."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[sse.ServerSentEvent] = []
        self.status: int | None = None
        self.task = asyncio.create_task(self._read(client, url, headers or {}))

    async def _read(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        decoder = sse.Decoder()
        async with client.stream("GET", url, headers={"accept": "text/event-stream", **headers}) as response:
            self.status = response.status_code
            async for chunk in response.aiter_bytes():
                self.events.extend(decoder.feed(chunk))

    @property
    def seen(self) -> list[tuple[str, str]]:
        """(event, id) pairs; a reset shows as ("reset", id)."""
        return [(e.event, e.id) for e in self.events]

    def data(self) -> list[object]:
        return [json.loads(e.data) for e in self.events if e.event == "n"]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def publish(client: httpx.AsyncClient, url: str, topic: str, data: object) -> int:
    for _ in range(200):  # retried with its key while Redis is away, as a client would
        r = await client.post(
            f"{url}/topics/{topic}/events", json={"event": "n", "data": data}, headers={"idempotency-key": f"k{data}"}
        )
        if r.status_code == 200:
            ids: list[int] = r.json()["ids"]
            return ids[0]
        assert r.status_code == 503, r.text
        await asyncio.sleep(0.05)
    raise AssertionError("Redis did not come back")


# -- a cursor beyond the end of the log ------------------------------------------------------------------------


async def test_last_event_id_beyond_the_end_of_a_closed_topic_gets_a_reset_then_the_log(store_url: str) -> None:
    hub = Hub(store_url, HubConfig(heartbeat=0.5))
    async with serve_app(create_app(hub)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        for i in (1, 2, 3):
            await publish(client, base, "t", i)
        assert (await client.post("/topics/t/close")).status_code == 200
        # Id 999 was never in this log (a client that saw another log of the same name): not a 204.
        stream = Stream(client, f"{base}/topics/t/events", {"last-event-id": "999"})
        await asyncio.wait_for(stream.task, 10)
        assert stream.status == 200
        assert stream.seen == [("reset", "0"), ("n", "1"), ("n", "2"), ("n", "3")]
        assert json.loads(stream.events[0].data) == {"first_id": 1, "requested_after": 999}
        # From the real end, a reconnect is told there is nothing more, ever.
        r = await client.get("/topics/t/events", headers={"last-event-id": "3"})
        assert r.status_code == 204


async def test_last_event_id_beyond_the_end_of_an_open_topic_gets_a_reset_then_the_log(store_url: str) -> None:
    hub = Hub(store_url, HubConfig(heartbeat=0.5))
    async with serve_app(create_app(hub)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        for i in (1, 2):
            await publish(client, base, "t", i)
        stream = Stream(client, f"{base}/topics/t/events", {"last-event-id": "7"})
        await eventually(lambda: len(stream.events) >= 3)
        await publish(client, base, "t", 3)
        await eventually(lambda: len(stream.events) >= 4)
        assert stream.seen == [("reset", "0"), ("n", "1"), ("n", "2"), ("n", "3")]
        await stream.stop()


async def test_an_idempotency_key_reused_with_another_payload_gets_422(store_url: str) -> None:
    hub = Hub(store_url)
    async with serve_app(create_app(hub)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        key = {"idempotency-key": "order-17"}
        first = await client.post("/topics/t/events", json=[{"data": 1}, {"data": 2}], headers=key)
        assert first.json() == {"ids": [1, 2]}
        retry = await client.post("/topics/t/events", json=[{"data": 1}, {"data": 2}], headers=key)
        assert retry.json() == {"ids": [1, 2]}
        reused = await client.post("/topics/t/events", json=[{"data": 1}, {"data": 3}], headers=key)
        assert reused.status_code == 422
        assert reused.json()["error"]["code"] == "idempotency_conflict"
        assert "order-17" in reused.json()["error"]["message"]
        assert (await client.get("/topics/t")).json()["last_id"] == 2  # nothing written


# -- a Redis that loses its data --------------------------------------------------------------------------------


@pytest.fixture
def volatile_redis(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path / "volatile", persistent=False)
    server.start()
    yield server  # type: ignore[misc]
    server.kill()


@pytest.mark.redis
async def test_a_redis_restart_without_persistence_resets_live_subscribers_on_every_node(
    server: Start, volatile_redis: RedisServer
) -> None:
    a = server("--store", volatile_redis.url, "--heartbeat", "0.5")
    b = server("--store", volatile_redis.url, "--heartbeat", "0.5")
    async with httpx.AsyncClient(timeout=20) as client:
        on_a = Stream(client, f"{a.url}/topics/t/events?after=0")  # this node never publishes
        on_b = Stream(client, f"{b.url}/topics/t/events?after=0")
        for i in range(1, 6):
            assert await publish(client, b.url, "t", i) == i
        await eventually(lambda: len(on_a.events) == 5 and len(on_b.events) == 5)

        volatile_redis.kill()
        await asyncio.to_thread(volatile_redis.start)  # empty: the log is gone, ids start again at 1
        for i in range(101, 104):
            await publish(client, b.url, "t", i)
        for stream in (on_a, on_b):
            await eventually(lambda stream=stream: len(stream.events) == 9, 15)  # type: ignore[misc]
            assert stream.seen[5:] == [("reset", "0"), ("n", "1"), ("n", "2"), ("n", "3")]
            assert stream.data() == [1, 2, 3, 4, 5, 101, 102, 103]
        # A client that comes back with an id of the lost log beyond the new one's end is reset too.
        late = Stream(client, f"{a.url}/topics/t/events", {"last-event-id": "5"})
        await eventually(lambda: len(late.events) == 4)
        assert late.seen == [("reset", "0"), ("n", "1"), ("n", "2"), ("n", "3")]
        for i in range(104, 108):
            await publish(client, b.url, "t", i)
        for stream in (on_a, on_b, late):
            await eventually(lambda stream=stream: stream.data()[-1:] == [107], 15)  # type: ignore[misc]
        assert on_a.data() == [1, 2, 3, 4, 5, *range(101, 108)]
        assert [e.event for e in on_a.events].count("reset") == 1
        for stream in (on_a, on_b, late):
            await stream.stop()


@pytest.mark.redis
async def test_a_flush_resets_live_subscribers_of_another_node(server: Start, volatile_redis: RedisServer) -> None:
    a = server("--store", volatile_redis.url, "--heartbeat", "0.5")
    b = server("--store", volatile_redis.url, "--heartbeat", "0.5")
    async with httpx.AsyncClient(timeout=20) as client:
        on_a = Stream(client, f"{a.url}/topics/t/events?after=0")
        for i in range(1, 4):
            await publish(client, b.url, "t", i)
        await eventually(lambda: len(on_a.events) == 3)
        with redis.Redis.from_url(volatile_redis.url) as admin:
            admin.flushall()  # the connections stay up: nothing but the entries tells node A
        for i in range(201, 206):  # the new log passes the old cursor: A's reader sees its epoch at once
            await publish(client, b.url, "t", i)
        await eventually(lambda: len(on_a.events) == 9, 15)
        assert on_a.seen[3:] == [("reset", "0"), *(("n", str(i)) for i in range(1, 6))]
        assert on_a.data() == [1, 2, 3, 201, 202, 203, 204, 205]
        await on_a.stop()


@pytest.mark.redis
async def test_a_lost_log_nobody_writes_to_is_found_by_the_reader_check(volatile_redis: RedisServer) -> None:
    url = f"{volatile_redis.url}?prefix=check:"
    follower = open_store(url, block=0.3)
    writer = open_store(url)
    assert isinstance(follower, RedisStore)
    changes: list[Change] = []
    follower.add_listener(changes.append)
    await follower.start()
    await writer.start()
    try:
        await writer.append("t", [NewEvent("n", "1"), NewEvent("n", "2")])
        info = await writer.info("t")
        assert info is not None
        await follower.follow("t", 2, info.epoch)
        with redis.Redis.from_url(volatile_redis.url) as admin:
            admin.flushall()
        await eventually(lambda: any(c.reset for c in changes), 5)
        reset = next(c for c in changes if c.reset)
        assert (reset.topic, reset.epoch) == ("t", "")  # gone, and no new log yet
        await writer.append("t", [NewEvent("n", "new")])  # a new log: its first event reaches the follower
        await eventually(lambda: [e.data for c in changes for e in c.events] == ["new"], 5)
        fresh = await writer.info("t")
        assert fresh is not None and fresh.epoch != info.epoch
        assert changes[-1].epoch == fresh.epoch
    finally:
        await follower.aclose()
        await writer.aclose()
