"""Redis commands per published event, with 1 and with 1,000 local subscribers.

    .venv/bin/python benchmarks/redis_commands.py [redis://127.0.0.1:6380/0]

Use a Redis nobody else talks to (the counts are INFO commandstats deltas of the
whole server). Without a URL it starts a private `redis-server` on a free port.
One hub publishes N events one at a time, each fully delivered to every local
subscriber before the next, so no batching flatters the figures.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import redis

from ssehub.config import HubConfig
from ssehub.hub import Hub

EVENTS = 100


async def until(predicate: Callable[[], bool]) -> None:
    while True:
        if predicate():
            return
        await asyncio.sleep(0.001)


def counts(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def measure(url: str, subscribers: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    hub = Hub(f"{url}?prefix=bench{subscribers}:", HubConfig(heartbeat=600))
    received = [0] * subscribers
    async with hub:
        await hub.publish("t", "start", 0)

        async def subscribe(n: int) -> None:
            async with hub.subscription("t", after=1) as sub:
                async for chunk in sub.chunks():
                    received[n] += chunk.count(b"id: ")

        tasks = [asyncio.create_task(subscribe(n)) for n in range(subscribers)]
        await until(lambda: hub.subscribers("t") >= subscribers)
        await asyncio.sleep(0.5)
        before = counts(client)
        for i in range(1, EVENTS + 1):
            await hub.publish("t", "tick", {"i": i})
            await until(lambda: min(received) >= i)  # noqa: B023 - awaited before i changes
        after = counts(client)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    client.close()
    delta = {k: after[k] - before.get(k, 0) for k in after if k != "info"}
    delta["info"] = after.get("info", 0) - before.get("info", 0) - 1  # the INFO of `before`
    out = {k: v / EVENTS for k, v in sorted(delta.items()) if v}
    out["total"] = sum(out.values())
    return out


def main() -> None:
    proc = None
    if len(sys.argv) > 1:
        url = sys.argv[1]
    else:
        if not shutil.which("redis-server"):
            raise SystemExit("give a Redis URL or install redis-server")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        directory = tempfile.mkdtemp()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--dir", directory], stdout=subprocess.DEVNULL
        )
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    try:
        for subscribers in (1, 1000):
            figures = asyncio.run(measure(url, subscribers))
            print(f"{subscribers:>5} local subscribers: " + ", ".join(f"{k} {v:g}" for k, v in figures.items()))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
