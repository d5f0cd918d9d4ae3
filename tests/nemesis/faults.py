"""The nemesis: faults drawn at random (with the run's seed) and injected while the clients work.

Every kind the store has is injected at least once, in a shuffled order, then kinds are drawn
at random until the run's duration is spent. Each fault records when it began and ended, and,
when the store could not be reached meanwhile, an outage (within which a 503 is expected).

    hub_kill        kill -9 of a hub, restarted after a moment
    hub_term        SIGTERM of a hub (it drains its streams), restarted once it has exited
    hub_pause       SIGSTOP of a hub for a few seconds, then SIGCONT
    cut             half of the client connections cut by the proxy in the middle of a chunk
    storm           every client connection cut at once: every subscriber reconnects together
    stall           some subscribers stop reading for a few seconds (the node process is stopped)
    mid_body        publishers that send half their body and go away, on every hub
    latency         latency added to every client connection for a few seconds
  Redis only:
    redis_restart   kill -9 of Redis, restarted from its append-only file
    redis_reset     kill -9 of Redis, restarted with nothing: what a Redis without persistence does
    redis_pause     SIGSTOP of Redis for a few seconds
    partition       a hub cut off from Redis (a black hole) for a few seconds
    redis_latency   latency between one hub and Redis for a few seconds
    both_hubs_down  two faults at once: two hubs down together (kill -9 and SIGTERM), then restarted
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from .cluster import Cluster
from .processes import HubProcess
from .workload import publish_mid_body

__all__ = ["KINDS", "kinds_for", "nemesis"]

Inject = Callable[[Cluster, random.Random], Awaitable[None]]


def _hub(c: Cluster, rng: random.Random) -> HubProcess:
    return rng.choice(c.hubs)


async def hub_kill(c: Cluster, rng: random.Random) -> None:
    hub, start = _hub(c, rng), c.clock()
    await hub.kill()
    down = rng.uniform(0.3, 2.0)
    await asyncio.sleep(down)
    await c.restart(hub)
    c.record("hub_kill", hub.name, start, f"down {down:.1f}s")


async def hub_term(c: Cluster, rng: random.Random) -> None:
    hub, start = _hub(c, rng), c.clock()
    code = await hub.terminate()
    await c.restart(hub)
    c.record("hub_term", hub.name, start, f"exit code {code}")


async def hub_pause(c: Cluster, rng: random.Random) -> None:
    hub, start = _hub(c, rng), c.clock()
    hub.pause()
    await asyncio.sleep(rng.uniform(1.5, 4.0))
    hub.resume()
    c.record("hub_pause", hub.name, start)


async def cut(c: Cluster, rng: random.Random) -> None:
    assert c.front is not None
    start = c.clock()
    count = await c.front.cut(0.5, rng)
    c.record("cut", "front", start, f"{count} connections")


async def storm(c: Cluster, rng: random.Random) -> None:
    assert c.front is not None
    start = c.clock()
    count = await c.front.cut(1.0, rng, idle=0.0)
    c.record("storm", "front", start, f"{count} connections")


async def stall(c: Cluster, rng: random.Random) -> None:
    start, seconds = c.clock(), rng.uniform(3.0, 6.0)
    readers = [r for r in c.readers if not r.finished]
    chosen = rng.sample(readers, k=max(1, len(readers) // 3)) if readers else []
    for reader in chosen:
        reader.stall(seconds)
    if c.node is not None:
        c.node.pause()
    await asyncio.sleep(seconds)
    if c.node is not None:
        c.node.resume()
    c.record("stall", f"{len(chosen)} python readers" + (" and the node readers" if c.node else ""), start)


async def mid_body(c: Cluster, rng: random.Random) -> None:
    start = c.clock()
    await asyncio.gather(*(publish_mid_body(hub.port) for hub in c.hubs if hub.alive))
    c.record("mid_body", "every hub", start)


async def latency(c: Cluster, rng: random.Random) -> None:
    assert c.front is not None
    start, added = c.clock(), rng.uniform(0.05, 0.3)
    c.front.latency = added
    await asyncio.sleep(rng.uniform(3.0, 6.0))
    c.front.latency = 0.0
    c.record("latency", "front", start, f"{added * 1000:.0f} ms")


async def redis_restart(c: Cluster, rng: random.Random, *, wipe: bool = False) -> None:
    assert c.redis is not None
    wipe = wipe or c.redis_wipes
    if wipe:
        await c.end_epoch()
    start = c.clock()
    await c.redis.kill()
    if wipe:
        c.redis.wipe()
    down = rng.uniform(0.3, 2.0)
    await asyncio.sleep(down)
    await c.redis.start()
    kind = "redis_reset" if wipe else "redis_restart"
    c.outage(kind.replace("_", " "), start, c.clock())
    c.record(kind, "redis", start, f"down {down:.1f}s" + (", its data lost" if wipe else ""))


async def redis_reset(c: Cluster, rng: random.Random) -> None:
    await redis_restart(c, rng, wipe=True)


async def redis_pause(c: Cluster, rng: random.Random) -> None:
    assert c.redis is not None
    start = c.clock()
    c.redis.pause()
    await asyncio.sleep(rng.uniform(2.0, 5.0))
    c.redis.resume()
    c.outage("redis pause", start, c.clock())
    c.record("redis_pause", "redis", start)


async def partition(c: Cluster, rng: random.Random) -> None:
    index, start = rng.randrange(len(c.redis_proxies)), c.clock()
    c.redis_proxies[index].partition()
    await asyncio.sleep(rng.uniform(2.0, 7.0))
    c.redis_proxies[index].heal()
    c.outage(f"partition of hub{index} from redis", start, c.clock())
    c.record("partition", f"hub{index} - redis", start)


async def redis_latency(c: Cluster, rng: random.Random) -> None:
    index, start, added = rng.randrange(len(c.redis_proxies)), c.clock(), rng.uniform(0.02, 0.2)
    c.redis_proxies[index].latency = added
    await asyncio.sleep(rng.uniform(3.0, 6.0))
    c.redis_proxies[index].latency = 0.0
    c.record("redis_latency", f"hub{index} - redis", start, f"{added * 1000:.0f} ms")


async def both_hubs_down(c: Cluster, rng: random.Random) -> None:
    first, second = rng.sample(c.hubs, 2)
    start = c.clock()
    await first.kill()
    await asyncio.sleep(rng.uniform(0.1, 0.5))
    await second.terminate()
    await asyncio.sleep(rng.uniform(0.5, 2.0))
    await asyncio.gather(c.restart(first), c.restart(second))
    c.record("both_hubs_down", f"{first.name} (kill -9) and {second.name} (SIGTERM)", start)


#: kind -> (inject, needs Redis, hubs needed)
KINDS: dict[str, tuple[Inject, bool, int]] = {
    "hub_kill": (hub_kill, False, 1),
    "hub_term": (hub_term, False, 1),
    "hub_pause": (hub_pause, False, 1),
    "cut": (cut, False, 1),
    "storm": (storm, False, 1),
    "stall": (stall, False, 1),
    "mid_body": (mid_body, False, 1),
    "latency": (latency, False, 1),
    "redis_restart": (redis_restart, True, 1),
    "redis_reset": (redis_reset, True, 1),
    "redis_pause": (redis_pause, True, 1),
    "partition": (partition, True, 1),
    "redis_latency": (redis_latency, True, 1),
    "both_hubs_down": (both_hubs_down, True, 2),
}


def kinds_for(store: str, hubs: int) -> list[str]:
    return [k for k, (_, redis, need) in KINDS.items() if (store == "redis" or not redis) and hubs >= need]


async def nemesis(c: Cluster, rng: random.Random, duration: float, kinds: list[str]) -> None:
    """Inject every kind once (shuffled), then random ones, until `duration` seconds have passed."""
    plan = list(kinds)
    rng.shuffle(plan)
    deadline = c.clock() + duration
    done = 0
    while done < len(plan) or c.clock() < deadline:
        kind = plan[done] if done < len(plan) else rng.choice(kinds)
        await KINDS[kind][0](c, rng)
        done += 1
        await asyncio.sleep(rng.uniform(0.5, 1.5))
