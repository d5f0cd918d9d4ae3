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
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..events import Event, NewEvent, TopicInfo
from ..exceptions import TooManyTopics

__all__ = [
    "Appended",
    "Change",
    "Created",
    "Listener",
    "Page",
    "Producer",
    "Store",
    "StreamState",
    "check_producer",
    "new_epoch",
    "page_events",
    "payload_fingerprint",
]


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


def page_events(events: Iterable[Event], max_bytes: int | None) -> list[Event]:
    """The events up to `max_bytes` of data in memory (at least one), taken from `events` one at a time."""
    if max_bytes is None:
        return list(events)
    page: list[Event] = []
    size = 0
    for event in events:
        size += sys.getsizeof(event.data) + len(event.event)
        if page and size > max_bytes:
            break
        page.append(event)
    return page


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
    moves up), `ttl` seconds after a topic closes (then it is deleted), `idle_ttl`
    seconds after an open topic's last publish (then it is deleted too), and
    idempotency keys are remembered for `key_ttl` seconds. At most `max_topics`
    topics are held: creating one beyond raises TooManyTopics.
    """

    #: Whether several processes may use the same store at once.
    shared: bool = False

    def __init__(
        self,
        *,
        max_events: int = 100_000,
        ttl: float = 86_400.0,
        key_ttl: float = 86_400.0,
        max_topics: int = 0,
        idle_ttl: float = 0.0,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if max_topics < 0 or idle_ttl < 0:
            raise ValueError("max_topics and idle_ttl must not be negative")
        self.max_events = max_events
        self.ttl = ttl
        self.key_ttl = key_ttl
        #: Topics the store may hold, open or closed (0: no cap); creating one more raises TooManyTopics.
        self.max_topics = max_topics
        #: Seconds an open topic may go without a publish before `purge` deletes it (0: never). Durable
        #: Streams have their own expiry (Stream-TTL, Expires-At) and are left to it.
        self.idle_ttl = idle_ttl
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

    def _check_room(self, topics: int, topic: str) -> None:
        """Before creating `topic` in a store that holds `topics`: TooManyTopics when that is the cap."""
        if self.max_topics and topics >= self.max_topics:
            raise TooManyTopics(
                f"cannot create topic {topic!r}: the hub holds {topics} topics, the most it may (--max-topics); "
                "existing topics still take events"
            )

    async def start(self) -> None:
        """Open connections, create schemas. Called once before use."""

    async def aclose(self) -> None:
        """Release every resource. The store is not used afterwards."""

    async def check_durability(self) -> None:
        """Refuse (InvalidInput) a configuration that cannot keep the durability the operator asked for.

        Called once by `ssehub serve` before it serves. A store that keeps its own files promises
        what docs/reliability.md says and has nothing to check.
        """

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
    async def read(self, topic: str, after: int, limit: int, max_bytes: int | None = None) -> Page | None:
        """Up to `limit` events with id > `after`, oldest first; None if no such topic.

        With `max_bytes`, the page ends before the event that would take its events' data and names past
        that many bytes, but holds at least one event: a replay holds a bounded amount at once, whatever
        the size of the events. Only what the page returns is ever held (see `page_events`).
        """

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
        """Delete topics closed more than `ttl` seconds ago, open ones idle for `idle_ttl` (not Durable Streams),
        and expired idempotency keys; return topics deleted."""

    # -- Durable Streams ----------------------------------------------------------------------------------
    # A Durable Streams stream is a topic whose metadata key "durable" holds its configuration (content
    # type, TTL, expiry, fork origin) and whose events are its appends. What the protocol needs atomically
    # lives here: create with a configuration, append under conditions (Stream-Seq, idempotent producers,
    # close), expiry, soft delete, and the pins that forks hold on their sources. A fork shares its
    # source's history instead of copying it: its own events start at `base + 1` and ids up to `base` are
    # read from the source, which may not be deleted for good while a fork pins it (see ssehub.asgi.durable).
    # Each operation touches one topic's state only, so it is one script on a Redis Cluster hash slot.

    @abstractmethod
    async def stream_state(self, topic: str) -> StreamState | None:
        """The topic with its Durable Streams state, None if there is no such topic."""

    @abstractmethod
    async def create_stream(
        self,
        topic: str,
        meta: dict[str, Any],
        events: Sequence[NewEvent],
        *,
        closed: bool,
        deadline: float | None,
        base: int = 0,
        forked_from: str | None = None,
    ) -> Created:
        """Create the topic with `meta`, ids starting after `base`, and `events`, closed if asked.

        A topic that exists is left alone ("exists"); one that is soft-deleted, or has expired while
        forks pin it, is "gone". One that has expired otherwise is replaced; `released` then names the
        source the old one pinned, which the caller unpins.
        """

    @abstractmethod
    async def append_stream(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        seq: str | None = None,
        producer: Producer | None = None,
        close: bool = False,
        renew: float | None = None,
    ) -> Appended:
        """Append `events` (none: close only) if the conditions hold, all in one step.

        In order: a missing or expired topic is "not_found", a soft-deleted one "gone"; an idempotent
        producer's claim is checked (a retry of what is stored is "duplicate", also on a closed topic);
        a closed topic is "closed"; a `seq` not above the last one (byte-wise) is "seq_conflict".
        `renew` is the new expiry of a stream with a sliding TTL.
        """

    @abstractmethod
    async def touch_stream(self, topic: str, deadline: float) -> None:
        """Move a live stream's expiry to `deadline` (a read of a stream with a sliding TTL)."""

    @abstractmethod
    async def delete_stream(self, topic: str) -> Literal["deleted", "soft", "not_found", "gone"]:
        """Delete the topic, or soft-delete it while forks pin it ("soft"); an expired topic is
        collected and "not_found". A deleted fork unpins its source, which may cascade."""

    @abstractmethod
    async def pin_source(self, source: str, fork: str) -> StreamState | None:
        """Record that `fork` reads `source`'s history, and return the source's state: None if it does
        not exist or has expired, `deleted` if it is soft-deleted (then nothing is recorded)."""

    @abstractmethod
    async def unpin_source(self, source: str, fork: str) -> None:
        """Forget a pin; a source soft-deleted or expired and pinned by nothing more is collected."""


@dataclass(frozen=True, slots=True)
class Producer:
    """An idempotent producer's claim on an append: its id, epoch and sequence number."""

    id: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class StreamState:
    """A topic as a Durable Streams stream."""

    info: TopicInfo
    #: When the stream expires (Unix seconds): its sliding TTL's or its Expires-At; None: never.
    deadline: float | None = None
    #: Soft-deleted: gone for clients, kept for the forks that read its history.
    deleted: bool = False
    #: How many forks pin it.
    forks: int = 0

    def dead(self, now: float) -> bool:
        return self.deleted or (self.deadline is not None and self.deadline <= now)


@dataclass(frozen=True, slots=True)
class Created:
    outcome: Literal["created", "exists", "gone"]
    state: StreamState
    ids: tuple[int, ...] = ()
    released: str | None = None


AppendOutcome = Literal[
    "ok", "duplicate", "closed", "not_found", "gone", "seq_conflict", "stale_epoch", "bad_epoch_seq", "seq_gap"
]


@dataclass(frozen=True, slots=True)
class Appended:
    """What came of an append: its ids, the topic's end, and for a producer its epoch and sequence.

    `epoch` is the producer's current epoch (the one to echo, or the one that fenced it), `seq` the
    highest sequence accepted in it, or for "seq_gap" the one expected.
    """

    outcome: AppendOutcome
    last_id: int = 0
    closed: bool = False
    ids: tuple[int, ...] = ()
    epoch: int | None = None
    seq: int | None = None


def check_producer(
    state: tuple[int, int] | None, claim: Producer
) -> tuple[Literal["accept", "duplicate", "stale_epoch", "bad_epoch_seq", "seq_gap"], int, int]:
    """Kafka-style idempotent producers: the verdict on `claim` given the stored (epoch, last seq).

    Returns the verdict and the (epoch, seq) to answer with. The Redis store's append script
    implements the same table in Lua; the contract tests hold the two together.
    """
    if state is None:
        return ("accept", claim.epoch, claim.seq) if claim.seq == 0 else ("seq_gap", claim.epoch, 0)
    epoch, last = state
    if claim.epoch < epoch:
        return "stale_epoch", epoch, last
    if claim.epoch > epoch:
        return ("accept", claim.epoch, 0) if claim.seq == 0 else ("bad_epoch_seq", epoch, last)
    if claim.seq <= last:
        return "duplicate", epoch, last
    if claim.seq == last + 1:
        return "accept", epoch, claim.seq
    return "seq_gap", epoch, last + 1
