"""Topic bounds on a real `ssehub serve`: a cap on topics, the expiry of idle open topics, and caps on
subscribers per process and per topic."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support import ServerProcess, redis_prefix

Start = Callable[..., ServerProcess]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "redis":
        base: str = request.getfixturevalue("redis_url")
        with redis_prefix(base) as prefix:
            yield f"{base}?prefix={prefix}"
    else:
        yield "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'hub.db'}"


#: How long the Redis store may count topics from before (it reads their number at most once a second).
COUNTED = 1.2


def publish(node: ServerProcess, topic: str, data: object = 1) -> httpx.Response:
    return httpx.post(f"{node.url}/topics/{topic}/events", json={"data": data}, timeout=10)


def test_a_publish_that_would_create_a_topic_beyond_the_cap_gets_507(server: Start, store: str) -> None:
    node = server("--store", store, "--max-topics", "3")
    for topic in ("a", "b", "c"):
        assert publish(node, topic).status_code == 200
    time.sleep(COUNTED)
    refused = publish(node, "d")
    assert refused.status_code == 507
    error = refused.json()["error"]
    assert error["code"] == "too_many_topics" and "--max-topics" in error["message"]
    assert httpx.get(f"{node.url}/topics/d", timeout=10).status_code == 404  # nothing was created
    # Existing topics keep working; a deleted one makes room.
    assert publish(node, "a", 2).status_code == 200
    assert httpx.post(f"{node.url}/topics/b/close", timeout=10).status_code == 200
    assert publish(node, "d").status_code == 507  # a closed topic is still held until its TTL
    assert httpx.delete(f"{node.url}/topics/b", timeout=10).status_code in (200, 204)
    time.sleep(COUNTED)
    assert publish(node, "d").status_code == 200
    time.sleep(COUNTED)
    assert publish(node, "e").status_code == 507


def test_an_open_topic_with_no_publish_for_the_idle_ttl_is_removed(server: Start, store: str) -> None:
    node = server("--store", store, "--idle-ttl", "1.5", "--purge-interval", "0.3")
    for topic in ("idle", "busy", "done"):
        assert publish(node, topic).status_code == 200
    assert httpx.post(f"{node.url}/topics/done/close", timeout=10).status_code == 200
    deadline = time.monotonic() + 30
    while httpx.get(f"{node.url}/topics/idle", timeout=10).status_code == 200:
        assert time.monotonic() < deadline, "the idle topic was never removed"
        assert publish(node, "busy").status_code == 200
        time.sleep(0.2)
    time.sleep(1)  # a few more sweeps
    assert httpx.get(f"{node.url}/topics/busy", timeout=10).status_code == 200  # published to meanwhile
    assert httpx.get(f"{node.url}/topics/done", timeout=10).status_code == 200  # closed: kept for --ttl
    # The name can be used again: a new topic.
    assert publish(node, "idle").json()["ids"] == [1]


def test_an_idle_ttl_of_0_keeps_open_topics(server: Start) -> None:
    node = server("--store", "memory://", "--idle-ttl", "0", "--purge-interval", "0.2")
    assert publish(node, "t").status_code == 200
    time.sleep(1.5)
    assert httpx.get(f"{node.url}/topics/t", timeout=10).status_code == 200


@contextlib.asynccontextmanager
async def stream(client: httpx.AsyncClient, node: ServerProcess, topic: str) -> AsyncIterator[httpx.Response]:
    async with client.stream("GET", f"{node.url}/topics/{topic}/events") as response:
        if response.status_code != 200:
            await response.aread()
            yield response
            return
        # The opening retry: hint: the subscription is held. The iterator is kept: dropping it closes the stream.
        chunks = response.aiter_bytes()
        await anext(chunks)
        yield response
        await chunks.aclose()


async def test_subscribers_beyond_the_process_cap_get_503_with_retry_after(server: Start) -> None:
    node = server("--store", "memory://", "--max-subscribers", "3")
    async with httpx.AsyncClient(timeout=10) as client, contextlib.AsyncExitStack() as held:
        for topic in ("a", "b", "a"):
            assert (await held.enter_async_context(stream(client, node, topic))).status_code == 200
        async with stream(client, node, "c") as refused:
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
            assert refused.json()["error"]["code"] == "too_many_subscribers"
        await held.aclose()
        await asyncio.sleep(0.5)  # the server notices the streams are gone
        async with stream(client, node, "c") as again:
            assert again.status_code == 200


async def test_subscribers_beyond_the_cap_per_topic_get_429_with_retry_after(server: Start) -> None:
    node = server("--store", "memory://", "--max-subscribers-per-topic", "2")
    async with httpx.AsyncClient(timeout=10) as client, contextlib.AsyncExitStack() as held:
        for _ in range(2):
            assert (await held.enter_async_context(stream(client, node, "hot"))).status_code == 200
        async with stream(client, node, "hot") as refused:
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
            assert refused.json()["error"]["code"] == "too_many_subscribers"
            assert "'hot'" in refused.json()["error"]["message"]
        async with stream(client, node, "cold") as other:
            assert other.status_code == 200  # another topic is not held against it
        # Publishing still works, and the held subscribers get it.
        assert (await client.post(f"{node.url}/topics/hot/events", json={"data": 1})).status_code == 200
