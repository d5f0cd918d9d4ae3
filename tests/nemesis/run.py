"""One nemesis run, start to end: set up, load, inject faults, heal, drain, read the logs, record.

    history = await run_nemesis(Config(store="redis", seed=7, duration=60))
    verdict = check(history)

After the faults, every process is brought back and the load stops: publishers finish the call
they are in (retrying until acknowledged, or giving up after `Config.drain` seconds), every run is read
until it is terminal, every topic is closed, and every reader is given `Config.drain` seconds to read
to the end and be told so. Then the logs are read back and the hubs sampled with no client left.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import random
import shutil
import sys
import time
from collections.abc import Awaitable
from typing import Any

import httpx

from .cluster import Cluster, Config
from .faults import kinds_for, nemesis
from .history import Answer, History, Reader
from .workload import RUN_EVENTS, Publisher, PythonReader, RunStarter

__all__ = ["run_nemesis"]


async def run_nemesis(config: Config, command: str = "") -> History:
    t0 = time.monotonic()
    wall0 = time.time()

    def clock() -> float:
        return time.monotonic() - t0

    if config.workdir.exists():
        shutil.rmtree(config.workdir)  # the run's own folder: a database left from an earlier run would mislead
    rng = random.Random(config.seed)
    kinds = list(config.kinds) or kinds_for(config.store, config.hub_count)
    cluster = Cluster(config, clock)
    answers: list[Answer] = []
    give_up = math.inf
    tasks: list[asyncio.Task[Any]] = []  # the readers
    background: list[asyncio.Task[Any]] = []
    node_readers: list[Reader] = []
    try:
        await cluster.start()
        await asyncio.sleep(1.0)
        cluster.sample("baseline")
        background.append(asyncio.create_task(cluster.sample_loop()))
        stop = asyncio.Event()

        def deadline() -> float:
            return give_up

        def read(name: str, topic: str, after: int) -> None:
            reader = PythonReader(name, cluster.url, topic, after, clock, answers)
            cluster.readers.append(reader)
            tasks.append(asyncio.create_task(reader.run()))

        def read_node(name: str, path: str, topic: str, after: int) -> None:
            if cluster.node is not None:
                events = RUN_EVENTS if topic.startswith("runs/") else ["message", "reset"]
                cluster.node.open(name, f"{cluster.url}{path}", topic, after, events, clock())

        for i, topic in enumerate(cluster.topics):
            for j in range(config.python_readers):
                read(f"py-{i}-{j}", topic, 0)
            for j in range(config.node_readers):
                read_node(f"node-{i}-{j}", f"/topics/{topic}/events?after=0", topic, 0)

        def attach(run_id: str) -> None:
            cluster.run_ids.append(run_id)
            n = len(cluster.run_ids)
            if n % 2 or cluster.node is None:
                read(f"py-run-{n}", f"runs/{run_id}", 0)
            if n % 2 == 0 or n % 3 == 0:
                read_node(f"node-run-{n}", f"/runs/{run_id}/events", f"runs/{run_id}", 0)

        publishers = [
            Publisher(
                f"pub{i}",
                cluster.url,
                cluster.topics,
                config.rate,
                random.Random(f"{config.seed}-pub{i}"),
                clock,
                answers,
            )
            for i in range(config.publishers)
        ]
        starters = [
            RunStarter(
                f"runs{i}", cluster.url, config.run_every, random.Random(f"{config.seed}-runs{i}"), clock, answers
            )
            for i in range(config.run_starters)
        ]
        # One event in every topic first, so that each exists and can be closed at the end.
        setup = Publisher("setup", cluster.url, cluster.topics, 1.0, random.Random(config.seed), clock, answers)
        await setup.create(cluster.topics, deadline)
        publishers.append(setup)
        load = [asyncio.create_task(p.run(stop, deadline)) for p in publishers[:-1]]
        load += [asyncio.create_task(s.run(stop, attach, deadline)) for s in starters]
        background.append(asyncio.create_task(_late_readers(cluster, config, rng, read)))

        await nemesis(cluster, rng, config.duration, kinds)
        await cluster.heal()
        await _cancel(background[1:])  # no more late readers (the sampler goes on)
        stop.set()
        give_up = clock() + config.drain
        await _settle(asyncio.gather(*load, return_exceptions=True), config.drain + 10)
        runs = [run for s in starters for run in await s.settle(clock() + max(config.drain, config.run_drain))]
        await _close_topics(cluster)
        readers = asyncio.gather(*tasks, return_exceptions=True)
        if cluster.node is not None:
            await asyncio.gather(cluster.node.finish(config.drain), _settle(readers, config.drain))
            node_readers = cluster.node.readers(wall0)
        else:
            await _settle(readers, config.drain)
        await _cancel(tasks)  # readers that have not finished by now never will
        logs = await cluster.read_logs(cluster.all_topics())
        await _cancel(background)
        await asyncio.sleep(1.5)  # the hubs notice the last disconnects
        cluster.sample("final")
    finally:
        await _cancel(tasks + background)
        await cluster.aclose()
    return History(
        store=config.store if config.store == "sqlite" else f"redis ({config.persistence})",
        seed=config.seed,
        duration=round(clock(), 1),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command or " ".join(sys.argv),
        faults=tuple(cluster.faults),
        outages=tuple(cluster.outages),
        publishes=tuple(p for pub in publishers for p in pub.publishes),
        readers=(*(r.history() for r in cluster.readers), *node_readers),
        runs=tuple(runs),
        answers=tuple(answers),
        epochs=cluster.final_epochs(logs),
        samples=tuple(cluster.samples),
        incidents=tuple(i for hub in cluster.hubs for i in hub.incidents(wall0)),
    )


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _settle(awaitable: Awaitable[Any], timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(awaitable, timeout)


async def _late_readers(cluster: Cluster, config: Config, rng: random.Random, read: Any) -> None:
    """Readers that join during the run, from a recent id: they replay a little, then follow."""
    for n in range(config.late_readers):
        await asyncio.sleep(rng.uniform(0.1, 1.0) * config.duration / max(1, config.late_readers))
        topic = rng.choice(cluster.topics)
        async with httpx.AsyncClient(base_url=cluster.url, timeout=3.0) as http:
            for _ in range(20):
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    response = await http.get(f"/topics/{topic}")
                    if response.status_code in (200, 404):
                        last = response.json()["last_id"] if response.status_code == 200 else 0
                        read(f"py-late-{n}", topic, max(0, last - rng.randint(0, 50)))
                        break
                await asyncio.sleep(0.5)


async def _close_topics(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=5.0) as http:
        for topic in cluster.topics:
            for _ in range(30):
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.post(f"/topics/{topic}/close", json={"status": "completed"})
                    if response.status_code == 200:
                        break
                await asyncio.sleep(0.3)
