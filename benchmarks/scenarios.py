"""The scenarios of the benchmarks, at each size: what the load generator is asked to do.

A scenario is a shape of load and its size. `SIZES` holds the main set of each size, `SWEEPS` the
series drawn in docs/benchmarks.md. The full sizes are those of the shared side-by-side harness
the earlier figures came from, so old and new figures compare.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NAMES", "SIZES", "SWEEPS", "Scenario", "agents", "chat", "fanout", "idle", "latency", "replay"]


@dataclass(frozen=True)
class Scenario:
    #: fanout, latency, idle, replay, chat, chatstream or agents.
    name: str
    subscribers: int
    events: int = 0
    #: Subscribers and events are spread over this many topics (agents: runs).
    topics: int = 1
    #: Concurrent publishers (agents: concurrent POSTs that start the runs).
    publishers: int = 1
    #: Events per second; 0 publishes as fast as the server takes them.
    rate: int = 0
    #: Seconds the idle subscribers are held.
    hold: float = 0.0
    #: Seconds the generator waits for every delivery once publishing is done.
    timeout: float = 90.0
    #: The latency of every k-th event of a subscriber is recorded.
    sample: int = 10

    @property
    def size(self) -> str:
        """The size in a few words, for tables."""
        n = f"{self.subscribers:,}"
        if self.name == "fanout":
            return f"{n} subscribers, {self.events:,} events, {self.publishers} publishers"
        if self.name == "latency":
            return f"{n} subscribers, {self.rate:,} events/s for {self.events / self.rate:g} s"
        if self.name == "idle":
            return f"{n} idle subscribers for {self.hold:g} s"
        if self.name == "replay":
            return f"{self.events:,} stored events read by {n} subscribers"
        if self.name == "agents":
            tokens, readers = self.events // self.topics, self.subscribers // self.topics
            return f"{self.topics:,} runs x {tokens} tokens, {readers} readers each"
        readers = self.subscribers // self.topics
        return f"{self.topics:,} topics x {readers} readers, {self.events:,} tokens from {self.publishers} publishers"

    def args(self) -> list[str]:
        """The load generator's flags (all but -sub, -pub and -agent)."""
        if self.name == "idle":
            return ["-n", str(self.subscribers), "-idle", f"{self.hold:g}s"]
        args = ["-n", str(self.subscribers), "-m", str(self.events), "-c", str(self.publishers)]
        args += ["-timeout", f"{self.timeout:g}s", "-sample", str(self.sample)]
        if self.topics > 1:
            args += ["-topics", str(self.topics)]
        if self.rate:
            args += ["-rate", str(self.rate)]
        if self.name == "replay":
            args.append("-replay")
        return args


NAMES = ("fanout", "latency", "idle", "replay", "chat", "chatstream", "agents")


def fanout(subscribers: int = 1000, events: int = 2000) -> Scenario:
    """Events of 32 B from 8 publishers, each delivered to every subscriber of one topic."""
    return Scenario("fanout", subscribers, events, publishers=8, timeout=90 + subscribers / 100)


def latency(subscribers: int = 100, events: int = 3000, rate: int = 1000) -> Scenario:
    """A paced publisher: end-to-end latency when the server is not saturated."""
    return Scenario("latency", subscribers, events, publishers=2, rate=rate, timeout=60, sample=1)


def idle(subscribers: int = 5000, hold: float = 8.0) -> Scenario:
    """Connections held open with nothing published: the server's memory per subscriber."""
    return Scenario("idle", subscribers, hold=hold)


def replay(subscribers: int = 20, events: int = 20000) -> Scenario:
    """Events stored first, then read from the start (`?after=0`) by every subscriber."""
    return Scenario("replay", subscribers, events, publishers=8, timeout=90, sample=1 << 30)


def chat(topics: int = 500, events: int = 40000, readers: int = 2, *, stream: bool = False) -> Scenario:
    """Many answers streamed at once, one token per event, each read by `readers` (a tab and a logger).

    With `stream`, each topic's tokens arrive over one streaming NDJSON POST (chatstream) where the
    server accepts it; elsewhere one POST per token, the only way those servers can be fed.
    """
    name = "chatstream" if stream else "chat"
    return Scenario(name, topics * readers, events, topics=topics, publishers=32, timeout=120, sample=1)


def agents(runs: int = 500, tokens: int = 80, readers: int = 2) -> Scenario:
    """Agent runs inside the server emitting `run.text` tokens, each run read by `readers`."""
    return Scenario("agents", runs * readers, runs * tokens, topics=runs, publishers=32, timeout=120, sample=1)


SIZES: dict[str, list[Scenario]] = {
    "full": [fanout(), latency(), idle(), replay(), chat(), chat(stream=True), agents()],
    # Seconds in all: enough to exercise every path and check every delivery, never to measure.
    "smoke": [
        fanout(20, 100),
        latency(5, 100, rate=500),
        idle(50, hold=2.0),
        replay(3, 200),
        chat(10, 200),
        chat(10, 200, stream=True),
        agents(10, 8),
    ],
}


def _fanout_point(subscribers: int) -> Scenario:
    # About two million deliveries per point, so each takes seconds; 1,000 is the main scenario itself.
    return fanout(subscribers, min(20_000, max(200, 2_000_000 // subscribers)))


SWEEPS: dict[str, dict[str, list[Scenario]]] = {
    "full": {
        "fanout": [_fanout_point(n) for n in (100, 1000, 5000, 10_000)],
        "chat": [chat(topics) for topics in (50, 500, 2000)],
    },
    "smoke": {
        "fanout": [fanout(10, 50), fanout(20, 100)],
        "chat": [chat(5, 100), chat(10, 200)],
    },
}
