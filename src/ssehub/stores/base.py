"""The contract every store keeps, and the change notifications it sends.

A store owns the topic log: it assigns ids, enforces idempotency and retention,
and tells its listener (the hub) about every change *in id order*, so the hub
can keep an in-memory tail of encoded frames without ever re-reading the log
for live delivery. A store that several processes share (`shared = True`)
only reports the changes of topics it was asked to `follow`.

Each log has an epoch, a random id created with it. A shared store that finds
the log it was following gone (a Redis restarted without persistence, or
flushed) reports a `Change` with `reset=True`: the ids that follow start again
at 1, in the new log, so no subscriber mistakes them for the old log's.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..events import Event, NewEvent, TopicInfo

__all__ = ["Change", "Listener", "Page", "Store", "new_epoch", "payload_fingerprint"]


@dataclass(frozen=True, slots=True)
class Change:
    """Something happened to a topic: events appended, the topic closed, deleted, or its log replaced.

    `epoch` is the epoch of the log the change belongs to, when the store knows it. With `reset`, the
    log this process followed is gone: what follows belongs to the log `epoch` ("" while there is
    none yet), whose ids start again at 1.
    """

    topic: str
    events: tuple[Event, ...] = ()
    status: str | None = None
    deleted: bool = False
    epoch: str | None = None
    reset: bool = False


Listener = Callable[[Change], None]


@dataclass(frozen=True, slots=True)
class Page:
    """Events read after a cursor, with the topic's bounds at the time of reading."""

    events: list[Event]
    first_id: int
    last_id: int
    status: str
    epoch: str = ""


def new_epoch() -> str:
    """A random id for a new log."""
    return secrets.token_hex(8)


def payload_fingerprint(events: Sequence[NewEvent], close: str | None = None) -> str:
    """A digest of what an append writes, kept with its idempotency key to tell a retry from a reuse."""
    digest = hashlib.sha256()
    for e in events:
        for part in (e.event, e.data):
            raw = part.encode("utf-8", "surrogatepass")
            digest.update(len(raw).to_bytes(8, "big") + raw)
    digest.update(b"close:" + (close or "").encode())
    return digest.hexdigest()[:32]


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

    async def follow(self, topic: str, after: int, epoch: str | None = None) -> None:
        """Report changes of `topic` after id `after` of its log `epoch` (None: no log yet) to the listeners.

        Shared stores only; a store that finds another log than `epoch` there reports a reset.
        """

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
        fingerprint: str | None = None,
    ) -> list[int]:
        """Append `events` atomically and return their ids; create the topic if needed.

        With an `idempotency_key` seen before on this topic, return the ids of
        that earlier append and write nothing. The key keeps the `fingerprint`
        of its payload (see `payload_fingerprint()`); a later append with that key and
        another fingerprint raises IdempotencyConflict, in the same atomic step.
        With `close`, close the topic with that status in the same step. Raises
        TopicClosed on a closed topic.
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
