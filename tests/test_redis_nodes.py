"""End to end: several `ssehub serve` processes over one Redis, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest

from ssehub import sse
from support import ROOT, RedisServer, ServerProcess, eventually, redis_prefix

pytestmark = pytest.mark.redis

Start = Callable[..., ServerProcess]


@pytest.fixture
def store(redis_url: str) -> Iterator[str]:
    with redis_prefix(redis_url) as prefix:
        yield f"{redis_url}?prefix={prefix}"


@pytest.fixture(params=["redis", "redis-cluster"])
def any_redis(request: pytest.FixtureRequest) -> Iterator[str]:
    """A single Redis, and a 3-master Redis Cluster: the same store URL but for `?cluster=yes`."""
    base: str = request.getfixturevalue("redis_url" if request.param == "redis" else "redis_cluster_url")
    with redis_prefix(base) as prefix:
        yield f"{base}{'&' if '?' in base else '?'}prefix={prefix}"


class Reader:
    """A resumable SSE consumer: reconnects with Last-Event-ID, to the next node when one fails."""

    def __init__(self, urls: list[str], topic: str) -> None:
        self.urls, self.topic = urls, topic
        self.events: list[sse.ServerSentEvent] = []
        self.retries = 0  # streams a server ended with a retry: hint
        self.failures = 0  # connections that broke or could not be made
        self.node = 0
        self.decoder = sse.Decoder()

    @property
    def ids(self) -> list[int]:
        return [int(e.id) for e in self.events]

    async def run(self, client: httpx.AsyncClient, stop_after: int | None = None) -> bool:
        """Read until the topic ends (True) or `stop_after` events were seen (False)."""
        while True:
            headers = {"accept": "text/event-stream"}
            if self.decoder.last_event_id:
                headers["last-event-id"] = self.decoder.last_event_id
            try:
                async with client.stream(
                    "GET", f"{self.urls[self.node]}/topics/{self.topic}/events?after=0", headers=headers
                ) as response:
                    if response.status_code == 204:
                        return True
                    if response.status_code != 200:  # e.g. 503 while the node's store is away
                        raise httpx.TransportError(f"status {response.status_code}")
                    async for chunk in response.aiter_bytes():
                        self.events.extend(e for e in self.decoder.feed(chunk) if e.event != "reset")
                        if stop_after is not None and len(self.events) >= stop_after:
                            return False
                        if chunk.startswith(b"retry:") or b"\nretry:" in chunk[1:]:
                            self.retries += 1
                self.decoder.close()
            except httpx.HTTPError:
                self.decoder.close()
                self.failures += 1
                self.node = (self.node + 1) % len(self.urls)
                await asyncio.sleep(0.1)


async def publish(client: httpx.AsyncClient, url: str, topic: str, data: object, key: str | None = None) -> int:
    headers = {"idempotency-key": key} if key else {}
    r = await client.post(f"{url}/topics/{topic}/events", json={"event": "n", "data": data}, headers=headers)
    assert r.status_code == 200, r.text
    ids: list[int] = r.json()["ids"]
    return ids[0]


async def test_two_nodes_share_topics_and_a_client_moves_between_them(server: Start, any_redis: str) -> None:
    a = server("--store", any_redis, "--heartbeat", "1")
    b = server("--store", any_redis, "--heartbeat", "1")
    async with httpx.AsyncClient(timeout=10) as client:
        reader = Reader([a.url], "chat")
        task = asyncio.create_task(reader.run(client, stop_after=5))
        await asyncio.sleep(0.3)
        for i in range(1, 6):
            assert await publish(client, b.url, "chat", i) == i  # published on B ...
        assert await asyncio.wait_for(task, 10) is False  # ... received on A
        assert reader.ids == [1, 2, 3, 4, 5]
        for i in range(6, 11):
            await publish(client, a.url if i % 2 else b.url, "chat", i)
        # The client moves to B mid-stream and resumes with its Last-Event-ID.
        reader.urls = [b.url]
        close = asyncio.create_task(client.post(f"{a.url}/topics/chat/close"))
        assert await asyncio.wait_for(reader.run(client), 10) is True
        assert (await close).status_code == 200
        assert reader.ids == list(range(1, 11))  # nothing lost, nothing repeated
        assert [json.loads(e.data) for e in reader.events] == list(range(1, 11))
        info = (await client.get(f"{b.url}/topics/chat")).json()
        assert (info["last_id"], info["status"]) == (10, "completed")
        listed = (await client.get(f"{a.url}/topics")).json()["topics"]
        assert [t["topic"] for t in listed] == ["chat"]


async def test_kill_9_of_a_node_mid_stream_and_the_client_finishes_on_the_other(server: Start, store: str) -> None:
    a = server("--store", store)
    b = server("--store", store)
    async with httpx.AsyncClient(timeout=10) as client:
        reader = Reader([a.url, b.url], "job")
        consume = asyncio.create_task(reader.run(client))

        async def produce() -> None:
            for i in range(1, 41):
                await publish(client, b.url, "job", i)
                await asyncio.sleep(0.01)
            assert (await client.post(f"{b.url}/topics/job/close")).status_code == 200

        producer = asyncio.create_task(produce())
        await eventually(lambda: len(reader.events) >= 10, 10)
        a.kill()  # SIGKILL: no drain, the connection just breaks
        await asyncio.wait_for(producer, 20)
        assert await asyncio.wait_for(consume, 20) is True
        assert reader.failures >= 1 and reader.node == 1
        assert reader.ids == list(range(1, 41))


async def test_redis_restart_mid_stream_loses_nothing_acknowledged(server: Start, private_redis: RedisServer) -> None:
    a = server("--store", private_redis.url, "--heartbeat", "0.5", "--retry", "100")
    b = server("--store", private_redis.url, "--heartbeat", "0.5", "--retry", "100")
    acked: dict[int, int] = {}
    refused = 0
    async with httpx.AsyncClient(timeout=10) as client:
        reader = Reader([a.url, b.url], "run")
        consume = asyncio.create_task(reader.run(client))

        async def produce() -> None:
            nonlocal refused
            for i in range(1, 61):
                while True:  # retry with the same Idempotency-Key until acknowledged
                    r = await client.post(
                        f"{b.url}/topics/run/events",
                        json={"event": "n", "data": i},
                        headers={"idempotency-key": f"k{i}"},
                    )
                    if r.status_code == 200:
                        acked[r.json()["ids"][0]] = i
                        break
                    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
                    refused += 1
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.01)
            for _ in range(100):
                if (await client.post(f"{b.url}/topics/run/close")).status_code == 200:
                    break
                await asyncio.sleep(0.05)

        producer = asyncio.create_task(produce())
        await eventually(lambda: len(acked) >= 20, 10)
        private_redis.kill()
        await asyncio.sleep(1.5)  # longer than a request waits for Redis to come back: some get 503
        private_redis.start()
        await asyncio.wait_for(producer, 30)
        assert await asyncio.wait_for(consume, 30) is True
    assert refused > 0  # Redis really was away while publishing
    assert sorted(acked) == list(range(1, 61))
    assert reader.ids == list(range(1, 61))
    assert [json.loads(e.data) for e in reader.events] == [acked[i] for i in range(1, 61)]
    assert a.proc is not None and a.proc.poll() is None  # both nodes lived through it
    assert b.proc is not None and b.proc.poll() is None


async def test_workers_share_one_port_and_drain_on_sigterm(server: Start, store: str) -> None:
    node = server("--store", store, "--workers", "2")
    async with httpx.AsyncClient(timeout=10) as client:
        readers = [Reader([node.url], "w") for _ in range(6)]
        tasks = [asyncio.create_task(r.run(client, stop_after=3)) for r in readers]
        await asyncio.sleep(0.5)
        for i in range(1, 4):
            await publish(client, node.url, "w", i)
        for task in tasks:
            assert await asyncio.wait_for(task, 10) is False
        assert all(r.ids == [1, 2, 3] for r in readers)

        # SIGTERM to the supervisor: every worker ends its streams with a retry: hint.
        received: list[list[bytes]] = [[] for _ in range(4)]

        async def listen(chunks: list[bytes]) -> None:
            async with client.stream("GET", f"{node.url}/topics/w/events", headers={"last-event-id": "3"}) as r:
                async for chunk in r.aiter_bytes():
                    chunks.append(chunk)

        listeners = [asyncio.create_task(listen(chunks)) for chunks in received]
        await eventually(lambda: all(received), 10)  # every stream is open
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*listeners), 10)
        assert node.proc.wait(10) == 0
        # Each stream got its opening hint and, at the end, the drain's retry: hint.
        assert [b"".join(chunks).count(b"retry: ") for chunks in received] == [2, 2, 2, 2]


async def test_a_worker_writes_one_access_line_per_request_the_hubs(server: Start, store: str) -> None:
    # uvicorn's own access lines stay off in the worker processes too: a worker sets up logging after
    # uvicorn has, and a second line per request there also turned off the connection's publish shortcut.
    node = server("--store", store, "--workers", "2")
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(6):
            await publish(client, node.url, "access-lines", i)
            # The body of a plain-text publish as well: the connection's shortcut answers it.
            r = await client.post(
                f"{node.url}/topics/access-lines/events", content=b"tok", headers={"content-type": "text/plain"}
            )
            assert r.status_code == 200, r.text
    lines = "method=POST path=/topics/access-lines/events status=200"
    await eventually(lambda: node.output().count(lines) == 12, 5)
    assert "uvicorn.access" not in node.output()
    assert '"POST /topics/access-lines/events HTTP/1.1"' not in node.output()


@pytest.mark.parametrize("store", ["memory://", "sqlite:///hub.db"])
def test_workers_refused_with_a_store_of_one_process(store: str, tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", "--store", store, "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # type: ignore[arg-type]
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ssehub serve: --workers 2 needs a store that processes can share (redis://host:port/db); "
        f"{store} belongs to one process"
    ]
