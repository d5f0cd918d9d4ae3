"""The set-up of a run, as an operator would have it:

    clients --> front Proxy (load balancer) --> hub0, hub1, ...        (ssehub serve --demo)
                                                  |      |
                               (Redis only)   Proxy0  Proxy1 ...  --> redis-server (private, AOF)

SQLite: one hub on a database file of its own. Redis: two or three hubs on one private
redis-server, each through a proxy of its own, so one hub can be cut off from Redis while the
others are not. The cluster also reads the logs back at the end (or just before Redis loses
them), samples the hubs' /proc, and puts everything right again after the faults.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support import free_port

from .history import Clock, Epoch, Fault, LoggedEvent, Outage, Sample, TopicLog, payload_of
from .processes import HubProcess, NodeReaders, RedisServer
from .proxy import Proxy
from .workload import PythonReader

__all__ = ["Cluster", "Config"]


@dataclass(frozen=True)
class Config:
    store: str = "sqlite"  # "sqlite" or "redis"
    seed: int = 1
    duration: float = 30.0
    hubs: int = 0  # 0: one on SQLite, two on Redis
    topics: int = 6
    publishers: int = 4
    rate: float = 10.0  # publish calls per second, per publisher
    python_readers: int = 2  # per topic, from the start
    node_readers: int = 1  # per topic, from the start
    late_readers: int = 4  # Python readers that join during the run, from a recent id
    run_every: float = 2.5  # seconds between runs started by each starter
    run_starters: int = 1
    persistence: str = "always"  # Redis: appendonly yes with appendfsync "always" or "everysec"; or "none"
    kinds: tuple[str, ...] = ()  # the fault kinds to draw from; () for every kind the store has
    src: Path | None = None  # run the hubs from this source tree (e.g. a deliberately broken copy)
    demo_delay: float = 0.04
    node: bool = True
    max_events: int | None = None
    drain: float = 30.0  # seconds the clients get to finish once the faults are over
    # Seconds a run started just before the end gets to finish: a demo answer takes 5-10 s, and
    # several times that on a loaded machine, however short the drain.
    run_drain: float = 90.0
    workdir: Path = field(default_factory=lambda: Path("nemesis-run"))

    @property
    def hub_count(self) -> int:
        return self.hubs or (1 if self.store == "sqlite" else 2)


class Cluster:
    def __init__(self, config: Config, clock: Clock) -> None:
        self.config, self.clock = config, clock
        self.workdir = config.workdir
        self.redis: RedisServer | None = None
        self.redis_proxies: list[Proxy] = []
        self.hubs: list[HubProcess] = []
        self.front: Proxy | None = None
        self.node: NodeReaders | None = None
        self.readers: list[PythonReader] = []
        self.topics = [f"nemesis-{i}" for i in range(config.topics)]
        self.run_ids: list[str] = []
        self.faults: list[Fault] = []
        self.outages: list[Outage] = []
        self.epochs: list[Epoch] = []  # the logs of each life of the store that ended, as they were just before
        self.epoch_start = 0.0
        self.samples: list[Sample] = []

    @property
    def url(self) -> str:
        assert self.front is not None
        return f"http://127.0.0.1:{self.front.port}"

    @property
    def redis_wipes(self) -> bool:
        """Whether a restart of Redis loses its data."""
        return self.config.persistence == "none"

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(config.hub_count)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SSEHUB_DEMO_DELAY": str(config.demo_delay)}
        if config.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(config.src), env.get("PYTHONPATH")]))
        args = ["--heartbeat", "1", "--retry", "500", "--run-grace", "2", "--demo"]
        if config.max_events is not None:
            args += ["--max-events", str(config.max_events)]
        stores: list[str]
        if config.store == "sqlite":
            stores = [f"sqlite:///{(self.workdir / 'hub.db').resolve()}"] * len(ports)
        else:
            fsync = None if config.persistence == "none" else config.persistence
            self.redis = RedisServer(self.workdir / "redis", fsync=fsync)
            await self.redis.start()
            for _ in ports:
                self.redis_proxies.append(await Proxy("redis", [self.redis.port]).start())
            stores = [f"redis://127.0.0.1:{p.port}/0" for p in self.redis_proxies]
        store_ports: list[int | None] = [p.port for p in self.redis_proxies] or [None] * len(ports)
        self.hubs = [
            HubProcess(f"hub{i}", port, store, args, env, self.workdir.resolve(), store_port)
            for i, (port, store, store_port) in enumerate(zip(ports, stores, store_ports, strict=True))
        ]
        await asyncio.gather(*(hub.start() for hub in self.hubs))
        self.front = await Proxy("front", ports).start()
        if config.node:
            self.node = NodeReaders(self.workdir / "node.jsonl")
            await self.node.start()

    async def aclose(self) -> None:
        if self.node is not None:
            await self.node.kill()
        await asyncio.gather(*(hub.terminate(10) for hub in self.hubs), return_exceptions=True)
        for proxy in [self.front, *self.redis_proxies]:
            if proxy is not None:
                await proxy.aclose()
        if self.redis is not None:
            await self.redis.kill()

    async def heal(self) -> None:
        """Undo whatever faults left behind: every process up and running, every proxy passing everything."""
        for proxy in [self.front, *self.redis_proxies]:
            if proxy is not None:
                proxy.heal()
                proxy.latency = 0.0
        if self.redis is not None:
            if self.redis.paused:
                self.redis.resume()
            if not self.redis.alive:
                await self.redis.start()
        for reader in self.readers:
            reader.stalled_until = 0.0
        if self.node is not None and self.node.paused:
            self.node.resume()
        for hub in self.hubs:
            if hub.paused:
                hub.resume()
        await asyncio.gather(*(self.restart(hub) for hub in self.hubs if not hub.alive))

    async def restart(self, hub: HubProcess) -> None:
        for attempt in range(5):
            try:
                await hub.start()
                return
            except RuntimeError:
                if attempt == 4:
                    raise
                await hub.kill()
                await asyncio.sleep(0.5)

    # -- records ------------------------------------------------------------------------------------------

    def record(self, kind: str, target: str, start: float, detail: str = "") -> None:
        self.faults.append(Fault(kind, target, round(start, 3), round(self.clock(), 3), detail))

    def outage(self, cause: str, start: float, end: float) -> None:
        self.outages.append(Outage(cause, round(start, 3), round(end, 3)))

    def sample(self, phase: str) -> None:
        for hub in self.hubs:
            found = hub.sample(round(self.clock(), 3), phase)
            if found is not None:
                self.samples.append(found)

    async def sample_loop(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.sample("run")

    # -- the logs -----------------------------------------------------------------------------------------

    def all_topics(self) -> list[str]:
        return [*self.topics, *(f"runs/{run_id}" for run_id in self.run_ids)]

    async def read_logs(self, topics: Iterable[str]) -> dict[str, TopicLog]:
        """Every topic's whole log, read as a client would (JSON pages) from a hub that answers.

        Tried again and again (on each hub in turn) for a while: a hub may answer a 503 or two
        after a fault, and the harness must not mistake that for the content of a log.
        """
        topics = list(topics)
        last: Exception | None = None
        for attempt in range(40):
            hub = self.hubs[attempt % len(self.hubs)]
            if not hub.alive or hub.paused:
                continue
            try:
                async with httpx.AsyncClient(base_url=hub.url, timeout=10.0) as http:
                    found = await asyncio.gather(*(read_log(http, topic) for topic in topics))
                return {log.topic: log for log in found if log is not None}
            except httpx.HTTPError as exc:
                last = exc
                await asyncio.sleep(0.25)
        raise RuntimeError(f"no hub could read the logs: {last!r}")

    async def end_epoch(self) -> None:
        """Just before Redis loses its data: keep its logs as they are, with every write held back meanwhile.

        `CLIENT PAUSE ... WRITE` stops every write (the append scripts) but not reads, so what is read
        here is exactly what Redis holds when it is killed, the pause still in force.
        """
        assert self.redis is not None
        client = self.redis.client()
        try:
            await client.client_pause(30_000, all=False)
        finally:
            await client.aclose()
        now = self.clock()
        logs = await self.read_logs(self.all_topics())
        self.epochs.append(Epoch(round(self.epoch_start, 3), round(now, 3), logs))
        self.epoch_start = now

    def final_epochs(self, logs: dict[str, TopicLog]) -> tuple[Epoch, ...]:
        return (*self.epochs, Epoch(round(self.epoch_start, 3), float("inf"), logs))


async def read_log(http: httpx.AsyncClient, topic: str) -> TopicLog | None:
    events: list[LoggedEvent] = []
    after = 0
    while True:
        response = await http.get(
            f"/topics/{topic}/events", params={"after": after, "limit": 1000}, headers={"accept": "application/json"}
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        page = response.json()
        events += [LoggedEvent(e["id"], e["event"], payload_of(e["data"])) for e in page["events"]]
        if not page["events"] or page["next_after"] >= page["last_id"]:
            return TopicLog(topic, page["first_id"], page["last_id"], page["status"], tuple(events))
        after = page["next_after"]
