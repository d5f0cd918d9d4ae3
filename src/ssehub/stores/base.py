"""The contract every store keeps, and the change notifications it sends.

A store owns the topic log: it assigns ids, enforces idempotency and retention,
and tells its listener (the hub) about every change *in id order*, so the hub
can keep an in-memory tail of encoded frames without ever re-reading the log
for live delivery. A store that several processes share (`shared = True`)
only reports the changes of topics it was asked to `follow`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..events import Event, NewEvent, TopicInfo

__all__ = ["Change", "Listener", "Page", "Store"]


@dataclass(frozen=True, slots=True)
class Change:
    """Something happened to a topic: events appended, the topic closed, or deleted."""

    topic: str
    events: tuple[Event, ...] = ()
    status: str | None = None
    deleted: bool = False


Listener = Callable[[Change], None]


@dataclass(frozen=True, slots=True)
class Page:
    """Events read after a cursor, with the topic's bounds at the time of reading."""

    events: list[Event]
    first_id: int
    last_id: int
    status: str


class Store(ABC):
    """The async contract of a topic log.

    Retention: `max_events` per topic (older events are trimmed and `first_id`
    moves up), `ttl` seconds after a topic closes (then it is deleted), and
    idempotency keys are remembered for `key_ttl` seconds.
    """

    #: Whether several processes may use the same store at once.
    shared: bool = False

    def __init__(self, *, max_events: int = 100_000, ttl: float = 86_400.0, key_ttl: float = 86_400.0) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self.ttl = ttl
        self.key_ttl = key_ttl
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _notify(self, change: Change) -> None:
        for listener in self._listeners:
            listener(change)

    @staticmethod
    def now() -> float:
        return time.time()

    async def start(self) -> None:
        """Open connections, create schemas. Called once before use."""

    async def aclose(self) -> None:
        """Release every resource. The store is not used afterwards."""

    async def follow(self, topic: str, after: int) -> None:
        """Report changes of `topic` after id `after` to the listeners (shared stores only)."""

    async def unfollow(self, topic: str) -> None:
        """Stop reporting changes of `topic` (shared stores only)."""

    @abstractmethod
    async def append(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        close: str | None = None,
    ) -> list[int]:
        """Append `events` atomically and return their ids; create the topic if needed.

        With an `idempotency_key` seen before on this topic, return the ids of
        that earlier append and write nothing. With `close`, close the topic
        with that status in the same step. Raises TopicClosed on a closed topic.
        """

    @abstractmethod
    async def read(self, topic: str, after: int, limit: int) -> Page | None:
        """Up to `limit` events with id > `after`, oldest first; None if no such topic."""

    @abstractmethod
    async def info(self, topic: str) -> TopicInfo | None:
        """The topic's state, or None if it does not exist."""

    @abstractmethod
    async def close_topic(self, topic: str, status: str) -> TopicInfo:
        """Close the topic with a final status; closing a closed topic changes nothing.

        Raises TopicNotFound.
        """

    @abstractmethod
    async def delete_topic(self, topic: str) -> bool:
        """Delete the topic and its events; False if it did not exist."""

    @abstractmethod
    async def topics(self, prefix: str = "", after: str = "", limit: int = 100) -> list[TopicInfo]:
        """Topics whose name starts with `prefix`, sorted by name, names > `after`."""

    @abstractmethod
    async def update_meta(self, topic: str, meta: dict[str, Any]) -> TopicInfo:
        """Merge `meta` into the topic's metadata (a key set to None is removed); create the topic if needed."""

    @abstractmethod
    async def purge(self) -> int:
        """Delete topics closed more than `ttl` seconds ago and expired idempotency keys; return topics deleted."""
