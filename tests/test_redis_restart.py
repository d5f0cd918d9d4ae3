"""A Redis restart under running `ssehub serve` processes: once Redis answers again, requests succeed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from ssehub.asgi import create_app
from ssehub.hub import Hub
from support import RedisServer, ServerProcess, redis_answers, serve_app

pytestmark = pytest.mark.redis

Start = Callable[..., ServerProcess]


async def burst(client: httpx.AsyncClient, url: str, n: int, round_: int, errors: list[str] | None = None) -> list[int]:
    """`n` requests at once: publishes and reads, so that each worker opens several pooled connections."""

    async def one(i: int) -> int:
        if i % 2:
            r = await client.get(f"{url}/topics/t{i % 10}")
        else:
            r = await client.post(
                f"{url}/topics/t{i % 10}/events",
                json={"event": "n", "data": i},
                headers={"idempotency-key": f"r{round_}-{i}"},
            )
        if r.status_code != 200 and errors is not None:
            errors.append(r.text)
        return r.status_code

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_no_503_once_redis_answers_again_in_every_worker(server: Start, private_redis: RedisServer) -> None:
    node = server("--store", private_redis.url, "--workers", "2")
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)  # new connections reach both workers
    async with httpx.AsyncClient(timeout=20, limits=limits) as client:
        for i in range(10):  # every topic exists, so that a GET is a 200 too
            await client.post(f"{node.url}/topics/t{i}/events", json={"event": "n", "data": 0})
        warm = await burst(client, node.url, 100, 1)
        assert set(warm) == {200}

        private_redis.kill()
        private_redis.start()  # returns once it answers PING again
        assert redis_answers(private_redis.url)
        statuses: list[int] = []
        errors: list[str] = []
        for round_ in range(2, 12):
            statuses += await burst(client, node.url, 40, round_, errors)
            await asyncio.sleep(0.1)
    refused = statuses.count(503)
    print(f"\n{refused} of {len(statuses)} requests answered 503 in the 2 s after Redis came back")
    assert refused == 0, sorted(set(errors))
    assert set(statuses) == {200}


async def test_a_publish_made_while_redis_restarts_waits_for_it(private_redis: RedisServer) -> None:
    """Reconnecting before answering, within a bounded wait: the first publish after the restart succeeds."""
    hub = Hub(private_redis.url)
    async with serve_app(create_app(hub)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        assert (await client.post("/topics/t/events", json={"data": 1})).json() == {"ids": [1]}
        private_redis.kill()
        publish = asyncio.create_task(client.post("/topics/t/events", json={"data": 2}))
        await asyncio.sleep(0.2)
        assert not publish.done()  # waiting for Redis, not failing at once
        await asyncio.to_thread(private_redis.start)
        r = await publish
        assert r.status_code == 200 and r.json() == {"ids": [2]}
        # With Redis gone for longer than the wait, the answer is a prompt 503, and nothing is written.
        private_redis.kill()
        r = await client.post("/topics/t/events", json={"data": 3})
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        await asyncio.to_thread(private_redis.start)
        assert (await client.post("/topics/t/events", json={"data": 4})).json() == {"ids": [3]}


async def test_redis_down_when_the_server_starts_is_one_line_and_no_traceback(server: Start, tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "later")
    node = server("--store", redis_server.url)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{node.url}/topics/t/events", json={"data": 1})
            assert r.status_code == 503
            await asyncio.sleep(1.5)  # the run sweeper and the reader try meanwhile
            await asyncio.to_thread(redis_server.start)
            for _ in range(100):
                r = await client.post(f"{node.url}/topics/t/events", json={"data": 1})
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert r.json() == {"ids": [1]}
            await asyncio.sleep(1.0)  # let the sweeper's next try succeed
        node.stop()
    finally:
        redis_server.kill()
    output = node.output()
    assert "Traceback" not in output and "exception" not in output.lower(), output
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, output  # unavailable, and answers again
    assert "is unavailable" in warnings[0] and "answers again" in warnings[1]


async def test_a_run_waits_out_a_redis_restart_and_completes_with_every_event_once(
    server: Start, private_redis: RedisServer
) -> None:
    async def restart() -> None:
        private_redis.kill()
        await asyncio.sleep(1.5)  # away long enough for several of its writes to fail
        private_redis.start()

    node = server("--store", private_redis.url, "--demo", env={"SSEHUB_DEMO_DELAY": "0.05"})
    doc, page = await run_through(node.url, restart)
    ids = [e["id"] for e in page["events"]]
    assert ids == list(range(1, len(ids) + 1))
    text = "".join(json.loads(e["data"])["content"] for e in page["events"] if e["event"] == "text_delta")
    assert text == doc["result"]["answer"]  # every token once, in order: none lost, none repeated
    assert page["events"][-1]["event"] == "done"


ASYNC = {"prefer": "respond-async"}


async def run_through(url: str, fault: Callable[[], Awaitable[None]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a demo run, `fault()` while it writes its answer; its document once it has ended, and its log."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        started = await client.post("/agents/chat", json={"message": "a long enough answer"}, headers=ASYNC)
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        await asyncio.sleep(0.6)  # it is writing its answer
        await fault()
        for _ in range(200):
            answer = await client.get(f"/runs/{run_id}")
            assert answer.status_code == 200, (answer.status_code, answer.text)
            doc = answer.json()
            if doc["status"] != "running":
                break
            await asyncio.sleep(0.1)
        assert doc["status"] == "completed", doc
        page = await client.get(
            f"/topics/runs/{run_id}/events", params={"limit": 1000}, headers={"accept": "application/json"}
        )
    return doc, page.json()


async def test_a_run_whose_log_redis_loses_goes_on_in_a_new_log_said_once(
    server: Start, private_redis: RedisServer
) -> None:
    async def flush() -> None:
        flushed = redis.asyncio.Redis.from_url(private_redis.url)
        await flushed.flushall()  # what a Redis without persistence does when it restarts
        await flushed.aclose()

    node = server("--store", private_redis.url, "--demo", env={"SSEHUB_DEMO_DELAY": "0.05"})
    _, page = await run_through(node.url, flush)
    ids = [e["id"] for e in page["events"]]
    assert ids and ids == list(range(1, len(ids) + 1))  # the new log: the rest of the answer, from id 1
    assert page["events"][-1]["event"] == "done"
    node.stop()
    lost = [line for line in node.output().splitlines() if "lost with the store's data" in line]
    # Said for the loss (by the run's next write, and maybe by a GET of the run meanwhile), not
    # again for each of the dozens of writes that follow it.
    assert 1 <= len(lost) <= 2, lost
