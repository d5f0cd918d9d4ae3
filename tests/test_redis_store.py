"""The Redis store on a real Redis: the contract, following across processes, fan-out cost, Redis going away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis

from ssehub.asgi import create_app
from ssehub.config import HubConfig
from ssehub.events import NewEvent
from ssehub.exceptions import InvalidInput, StoreUnavailable, TopicClosed, TopicNotFound
from ssehub.hub import Hub
from ssehub.stores import Change, open_store
from ssehub.stores.redis import RedisStore
from support import Read, RedisServer, eventually, read_sse, redis_prefix, serve_app

pytestmark = pytest.mark.redis


@pytest.fixture
def url(redis_url: str) -> Iterator[str]:
    with redis_prefix(redis_url) as prefix:
        yield f"{redis_url}?prefix={prefix}"


@contextlib.asynccontextmanager
async def opened(url: str, **options: float) -> AsyncIterator[RedisStore]:
    store = open_store(url, **options)
    assert isinstance(store, RedisStore)
    await store.start()
    try:
        yield store
    finally:
        await store.aclose()


def ev(i: int) -> NewEvent:
    return NewEvent.from_json("tick", {"i": i})


async def test_append_read_info_idempotency(url: str) -> None:
    async with opened(url) as store:
        assert await store.info("t") is None
        assert await store.read("t", 0, 10) is None
        assert await store.append("t", [ev(1), ev(2)]) == [1, 2]
        assert await store.append("t", [ev(3)], idempotency_key="k") == [3]
        assert await store.append("t", [ev(99)], idempotency_key="k") == [3]  # a retry writes nothing
        assert await store.append("t", [NewEvent("message", "plain text\nline two")]) == [4]
        page = await store.read("t", 1, 2)
        assert page is not None
        assert [(e.id, e.json()) for e in page.events] == [(2, {"i": 2}), (3, {"i": 3})]
        assert (page.first_id, page.last_id, page.status) == (1, 4, "open")
        page = await store.read("t", 3, 100)
        assert page is not None and page.events[0].data == "plain text\nline two"
        info = await store.info("t")
        assert info is not None and (info.last_id, info.first_id, info.status) == (4, 1, "open")
        assert info.created <= info.updated


async def test_close_delete_and_create_again(url: str) -> None:
    async with opened(url) as store:
        await store.append("t", [ev(1)], idempotency_key="k")
        closed = await store.close_topic("t", "completed")
        assert closed.status == "completed" and closed.closed_at is not None
        again = await store.close_topic("t", "failed")  # closing a closed topic changes nothing
        assert again.status == "completed"
        with pytest.raises(TopicClosed):
            await store.append("t", [ev(2)])
        assert await store.append("t", [ev(2)], idempotency_key="k") == [1]  # a retry of the accepted append
        with pytest.raises(TopicNotFound):
            await store.close_topic("nope", "completed")
        assert await store.append("u", [ev(1)], close="failed") == [1]
        assert (await store.info("u")).status == "failed"  # type: ignore[union-attr]
        assert await store.delete_topic("t") is True
        assert await store.delete_topic("t") is False
        assert await store.info("t") is None
        # Created again: a new log from id 1, and the old idempotency key is gone with the old topic.
        assert await store.append("t", [ev(5)], idempotency_key="k") == [1]
        page = await store.read("t", 0, 10)
        assert page is not None and [e.json() for e in page.events] == [{"i": 5}]


async def test_topics_paging_and_meta(url: str) -> None:
    async with opened(url) as store:
        for name in ["b/2", "a", "b/1", "c", "b/3"]:
            await store.append(name, [ev(0)])
        assert [t.name for t in await store.topics()] == ["a", "b/1", "b/2", "b/3", "c"]
        assert [t.name for t in await store.topics("b/")] == ["b/1", "b/2", "b/3"]
        assert [t.name for t in await store.topics("b/", after="b/1", limit=1)] == ["b/2"]
        assert [t.name for t in await store.topics("", after="b/3")] == ["c"]
        assert [t.name for t in await store.topics("", after="a", limit=2)] == ["b/1", "b/2"]
        info = await store.update_meta("m", {"owner": "ann", "tags": [], "n": 1.5})
        assert info.meta == {"n": 1.5, "owner": "ann", "tags": []} and info.last_id == 0
        info = await store.update_meta("m", {"owner": None, "x": {"y": 2}})
        assert info.meta == {"n": 1.5, "tags": [], "x": {"y": 2}}
        with pytest.raises(InvalidInput):
            await store.update_meta("m", {"bad": object()})


async def test_retention_trim_and_ttl(url: str) -> None:
    async with opened(url, max_events=3, ttl=0.3) as store:
        await store.append("t", [ev(i) for i in range(1, 6)])
        page = await store.read("t", 0, 100)
        assert page is not None and [e.id for e in page.events] == [3, 4, 5] and page.first_id == 3
        await store.append("t", [ev(6)], close="completed")
        assert (await store.info("t")).first_id == 4  # type: ignore[union-attr]
        await store.append("open", [ev(1)])
        await asyncio.sleep(0.5)
        assert await store.info("t") is None  # the closed topic lived `ttl` seconds
        assert await store.purge() == 1
        assert [t.name for t in await store.topics()] == ["open"]


async def test_bad_url_and_unreachable_redis() -> None:
    with pytest.raises(InvalidInput):
        open_store("redis://127.0.0.1:1/0?prefix=")
    store = open_store("redis://127.0.0.1:1/0")
    await store.start()  # a node may start before its Redis: it answers 503 until Redis does
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1"):
        await store.append("t", [ev(1)])
    with pytest.raises(StoreUnavailable):
        await store.info("t")
    await store.aclose()


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.arrived = asyncio.Event()

    def __call__(self, change: Change) -> None:
        self.changes.append(change)
        self.arrived.set()

    async def until(self, predicate: object, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                self.arrived.clear()
                await self.arrived.wait()

    def ids(self, topic: str) -> list[int]:
        return [e.id for c in self.changes if c.topic == topic for e in c.events]


async def test_follow_reports_another_process_changes_in_order(url: str) -> None:
    async with opened(url) as writer, opened(url) as follower:
        seen = Recorder()
        follower.add_listener(seen)
        await writer.append("t", [ev(1), ev(2)])
        await follower.follow("t", 1)  # reports what comes after id 1, including what is already there
        await seen.until(lambda: seen.ids("t") == [2])
        await follower.follow("u", 0)  # a second log joins the blocked reader at once
        for i in range(3, 23):
            await writer.append("t", [ev(i)])
        await writer.append("u", [ev(1)])
        await seen.until(lambda: seen.ids("u") == [1] and seen.ids("t") == list(range(2, 23)))
        await writer.append("t", [ev(23), ev(24)], close="completed")
        await seen.until(lambda: any(c.status == "completed" for c in seen.changes))
        assert seen.ids("t") == list(range(2, 25))  # in id order, no gap, no repeat
        assert [c.status for c in seen.changes if c.status] == ["completed"]
        await writer.delete_topic("u")
        await seen.until(lambda: any(c.deleted for c in seen.changes))
        assert [c.topic for c in seen.changes if c.deleted] == ["u"]
        # Unfollowed: nothing more is reported.
        await follower.unfollow("t")
        await writer.append("other", [ev(1)])
        count = len(seen.changes)
        await asyncio.sleep(0.2)
        assert len(seen.changes) == count


async def test_local_and_remote_appends_are_reported_once_in_order(url: str) -> None:
    async with opened(url) as other, opened(url) as here:
        seen = Recorder()
        here.add_listener(seen)
        await here.follow("t", 0)
        for i in range(1, 61):
            # Interleaved writers: this process's own appends are reported at once when nothing is
            # pending, the other's by the reader; either way each id once, in order.
            await (here if i % 3 else other).append("t", [ev(i)])
            if i % 7 == 0:
                await asyncio.sleep(0.005)
        await here.close_topic("t", "completed")
        await seen.until(lambda: any(c.status for c in seen.changes))
        assert seen.ids("t") == list(range(1, 61))
        assert [c.status for c in seen.changes if c.status] == ["completed"]
        await asyncio.sleep(0.1)
        assert [c.status for c in seen.changes if c.status] == ["completed"]


async def test_a_topic_created_here_while_the_epochs_are_checked_is_not_taken_for_a_lost_log(url: str) -> None:
    """The reader compares the epochs of the logs it follows with Redis's. An answer that left Redis before this
    process created the topic (by an append, which tells the follow its epoch at once) is older than what the
    follow knows: taken for a lost log, it would reset the topic's subscribers and show its first events twice."""
    async with opened(url) as here:
        seen = Recorder()
        here.add_listener(seen)
        await here.follow("t", 0)  # not created yet: a reader waits for it, as a subscriber does
        check = here._epochs_script
        interleaved = False

        async def answered_before_the_append(**kwargs: object) -> object:
            nonlocal interleaved
            found = await check(**kwargs)
            if not interleaved:
                interleaved = True
                await here.append("t", [ev(1)])  # the topic is created while the answer is on its way
            return found

        here._epochs_script = answered_before_the_append  # type: ignore[assignment]
        await here._check_epochs(here._reader_of("t"))
        assert interleaved
        here._epochs_script = check
        await here.append("t", [ev(2)])
        await seen.until(lambda: 2 in seen.ids("t"))
        await asyncio.sleep(0.1)
        assert not [c for c in seen.changes if c.reset], seen.changes
        assert seen.ids("t") == [1, 2]


def command_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def published_commands(redis_server: RedisServer, subscribers: int, events: int = 20) -> dict[str, int]:
    """Redis commands per published event on a node with `subscribers` local subscribers to the topic."""
    prefix = f"measure{subscribers}:"
    client = redis.Redis.from_url(redis_server.url)
    hub = Hub(f"{redis_server.url}?prefix={prefix}", HubConfig(heartbeat=60))
    received = [0] * subscribers
    async with hub:
        await hub.publish("t", "start", 0)

        async def subscribe(n: int) -> None:
            async with hub.subscription("t", after=1) as sub:
                async for chunk in sub.chunks():
                    received[n] += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")

        tasks = [asyncio.create_task(subscribe(n)) for n in range(subscribers)]
        await eventually(lambda: hub.subscribers("t") >= subscribers, 10)
        await asyncio.sleep(0.2)  # let the reader settle into its blocking XREAD
        before_all = command_calls(client)
        before = {k: int(v["calls"]) for k, v in client.info("commandstats").items()}
        for i in range(1, events + 1):
            await hub.publish("t", "tick", i)
            await eventually(lambda i=i: min(received) >= i, 10)
        after = {k: int(v["calls"]) for k, v in client.info("commandstats").items()}
        total = command_calls(client) - before_all - 1  # the INFO between
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    client.close()
    by_command = {k.removeprefix("cmdstat_"): after[k] - before.get(k, 0) for k in after if k != "cmdstat_info"}
    return {"total": total, **{k: v for k, v in by_command.items() if v}}


async def test_fanout_costs_redis_the_same_for_1_and_many_subscribers(private_redis: RedisServer) -> None:
    one = await published_commands(private_redis, 1)
    many = await published_commands(private_redis, 300)
    # Per event: one EVALSHA from the publisher and at most one XREAD of the follower (one read may
    # return several entries), plus the script's own three calls, whatever the number of subscribers.
    for figures in (one, many):
        assert figures["evalsha"] == 20
        assert 1 <= figures["xread"] <= 20
        assert figures["total"] <= 20 * 5


async def test_redis_going_away_gives_503_and_everything_resumes(private_redis: RedisServer) -> None:
    hub = Hub(private_redis.url, HubConfig(heartbeat=0.2, retry_ms=100))
    async with serve_app(create_app(hub)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        ids = [(await client.post("/topics/t/events", json={"event": "n", "data": i})).json()["ids"][0] for i in (1, 2)]
        assert ids == [1, 2]
        got = Read()
        reader = asyncio.create_task(read_sse(client, "/topics/t/events?after=0", into=got))
        await eventually(lambda: len([e for e in got.events if e.event == "n"]) >= 2, 10)

        private_redis.kill()
        r = await client.post("/topics/t/events", json={"event": "n", "data": 3})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "store_unavailable"
        assert (await client.get("/topics/t")).status_code == 503
        # The subscriber keeps its connection: heartbeats go on while Redis is away.
        heartbeats = got.raw.count(b": keep-alive")
        await eventually(lambda: got.raw.count(b": keep-alive") >= heartbeats + 2, 10)
        assert not reader.done()

        private_redis.start()  # same port, same append-only file
        async with asyncio.timeout(20):
            while True:
                r = await client.post("/topics/t/events", json={"event": "n", "data": 3})
                if r.status_code == 200:
                    break
                assert r.status_code == 503
                await asyncio.sleep(0.05)
        assert r.json() == {"ids": [3]}  # nothing acknowledged was lost, nothing half-written
        assert (await client.post("/topics/t/close", json={"status": "completed"})).status_code == 200
        await asyncio.wait_for(reader, 20)  # the follower reconnected by itself and the stream completed
        assert [(e.id, json.loads(e.data)) for e in got.events if e.event == "n"] == [("1", 1), ("2", 2), ("3", 3)]


def test_core_works_without_redis_py() -> None:
    code = """
import sys
sys.modules["redis"] = None  # as if redis-py were not installed
import ssehub, ssehub.asgi, ssehub.server
from ssehub.exceptions import InvalidInput
from ssehub.stores import open_store
open_store("memory://")
try:
    open_store("redis://127.0.0.1:6379/0")
except InvalidInput as exc:
    print(exc.message)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "pip install 'ssehub[redis]'" in result.stdout


async def test_every_store_url_serves_a_hub(store_url: str) -> None:
    """The `store_url` fixture (which the contract suite uses) includes Redis, each test under its own prefix."""
    async with Hub(store_url) as hub:
        assert await hub.topics() == []
        async with hub.subscription("t", after=0) as sub:
            await hub.publish("t", "n", 1)
            await hub.close_topic("t")
            frames = b"".join([chunk async for chunk in sub.chunks()])
        assert b"id: 1\nevent: n\ndata: 1\n\n" in frames
