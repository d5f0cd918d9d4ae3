"""`memory://`: the whole log in a dict. For tests and throwaway use; lost on exit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..events import Event, NewEvent, TopicInfo
from ..exceptions import IdempotencyConflict, TopicClosed, TopicNotFound
from .base import Appended, Change, Created, Page, Producer, Store, StreamState, check_producer, new_epoch, page_events

__all__ = ["MemoryStore"]


@dataclass
class _Topic:
    info: TopicInfo
    events: list[Event] = field(default_factory=list)
    keys: dict[str, tuple[list[int], float, str | None]] = field(default_factory=dict)  # ids, time, fingerprint
    durable: _Durable = field(default_factory=lambda: _Durable())


@dataclass
class _Durable:
    """A topic's Durable Streams state (see Store.create_stream)."""

    deadline: float | None = None
    deleted: bool = False
    last_seq: str | None = None
    producers: dict[str, tuple[int, int]] = field(default_factory=dict)
    forks: set[str] = field(default_factory=set)
    source: str | None = None


class MemoryStore(Store):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._topics: dict[str, _Topic] = {}

    def __repr__(self) -> str:
        return "MemoryStore()"

    # Every method runs to completion without awaiting, so each one is atomic
    # with respect to the others on the event loop.

    async def append(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        close: str | None = None,
        fingerprint: str | None = None,
    ) -> list[int]:
        now = self.now()
        t = self._topic(topic, now)
        if idempotency_key is not None and idempotency_key in t.keys:
            ids, _, known = t.keys[idempotency_key]
            if known and fingerprint and known != fingerprint:
                raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used with another payload")
            return list(ids)
        if t.info.closed:
            raise TopicClosed(f"topic {topic!r} is {t.info.status}")
        first = t.info.last_id + 1
        stored = tuple(Event(first + i, e.event, e.data, now) for i, e in enumerate(events))
        ids = [e.id for e in stored]
        t.events.extend(stored)
        last_id = t.info.last_id + len(stored)
        if len(t.events) > self.max_events:
            del t.events[: len(t.events) - self.max_events]
        first_id = t.events[0].id if t.events else last_id + 1
        info = t.info
        # Built directly rather than with dataclasses.replace, which costs several times as much: once per token.
        t.info = TopicInfo(
            info.name,
            last_id,
            first_id,
            info.status if close is None else close,
            info.created,
            now,
            info.closed_at if close is None else now,
            info.meta,
            info.epoch,
        )
        if idempotency_key is not None:
            t.keys[idempotency_key] = (ids, now, fingerprint)
        self._notify(Change(topic, stored, close, epoch=t.info.epoch))
        return ids

    def _topic(self, topic: str, now: float) -> _Topic:
        t = self._topics.get(topic)
        if t is None:
            self._check_room(len(self._topics), topic)
            t = self._topics[topic] = _Topic(TopicInfo(topic, created=now, updated=now, epoch=new_epoch()))
        return t

    async def read(self, topic: str, after: int, limit: int, max_bytes: int | None = None) -> Page | None:
        t = self._topics.get(topic)
        if t is None:
            return None
        start = max(0, after + 1 - t.info.first_id)
        events = t.events[start : start + limit]
        if max_bytes is not None:
            events = page_events(events, max_bytes)
        return Page(events, t.info.first_id, t.info.last_id, t.info.status, t.info.epoch)

    async def info(self, topic: str) -> TopicInfo | None:
        t = self._topics.get(topic)
        return None if t is None else t.info

    async def close_topic(self, topic: str, status: str) -> TopicInfo:
        t = self._topics.get(topic)
        if t is None:
            raise TopicNotFound(f"no topic {topic!r}")
        if not t.info.closed:
            t.info = replace(t.info, status=status, closed_at=self.now())
            self._notify(Change(topic, (), status, epoch=t.info.epoch))
        return t.info

    async def delete_topic(self, topic: str) -> bool:
        if self._topics.pop(topic, None) is None:
            return False
        self._notify(Change(topic, deleted=True))
        return True

    async def topics(self, prefix: str = "", after: str = "", limit: int = 100) -> list[TopicInfo]:
        names = sorted(n for n in self._topics if n.startswith(prefix) and n > after)
        return [self._topics[n].info for n in names[:limit]]

    async def update_meta(self, topic: str, meta: dict[str, Any]) -> TopicInfo:
        t = self._topic(topic, self.now())
        merged = {**t.info.meta, **meta}
        t.info = replace(t.info, meta={k: v for k, v in merged.items() if v is not None})
        return t.info

    async def purge(self) -> int:
        now = self.now()
        gone = [
            n
            for n, t in self._topics.items()
            if t.info.closed_at is not None and t.info.closed_at + self.ttl <= now and not t.durable.forks
        ]
        for name in gone:
            await self.delete_topic(name)
        if self.idle_ttl:
            idle = [
                n
                for n, t in self._topics.items()
                if not t.info.closed
                and t.info.updated + self.idle_ttl <= now
                and "durable" not in t.info.meta
                and not t.durable.forks
            ]
            for name in idle:
                await self.delete_topic(name)
            gone += idle
        expired = [n for n, t in self._topics.items() if self._state(t).dead(now) and not t.durable.forks]
        for name in expired:
            self._drop(name)
        gone += expired
        for t in self._topics.values():
            expired = [k for k, (_, at, _) in t.keys.items() if at + self.key_ttl <= now]
            for k in expired:
                del t.keys[k]
        return len(gone)

    # -- Durable Streams -------------------------------------------------------------------------------

    @staticmethod
    def _state(t: _Topic) -> StreamState:
        d = t.durable
        return StreamState(t.info, d.deadline, d.deleted, len(d.forks))

    def _live(self, topic: str) -> _Topic | None:
        """The topic, unless it has expired: then it is collected, or soft-deleted while pinned."""
        t = self._topics.get(topic)
        if t is None or t.durable.deleted or not self._state(t).dead(self.now()):
            return t
        if t.durable.forks:
            t.durable.deleted = True
            return t
        self._drop(topic)
        return None

    def _drop(self, topic: str) -> None:
        """Delete for good, and unpin the source it forked from (which may cascade)."""
        t = self._topics.pop(topic, None)
        if t is None:
            return
        self._notify(Change(topic, deleted=True))
        source = self._topics.get(t.durable.source) if t.durable.source else None
        if source is not None and t.durable.source is not None:
            source.durable.forks.discard(topic)
            if not source.durable.forks and self._state(source).dead(self.now()):
                self._drop(t.durable.source)

    async def stream_state(self, topic: str) -> StreamState | None:
        t = self._topics.get(topic)
        return None if t is None else self._state(t)

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
        now = self.now()
        released = None
        old = self._topics.get(topic)
        if old is not None:
            if not self._state(old).dead(now):
                return Created("exists", self._state(old))
            if old.durable.forks or old.durable.deleted:
                old.durable.deleted = True
                return Created("gone", self._state(old))
            released = old.durable.source
            self._drop(topic)
        else:
            self._check_room(len(self._topics), topic)
        info = TopicInfo(
            topic, last_id=base, first_id=base + 1, created=now, updated=now, meta=dict(meta), epoch=new_epoch()
        )
        t = self._topics[topic] = _Topic(info, durable=_Durable(deadline=deadline, source=forked_from))
        stored = tuple(Event(base + 1 + i, e.event, e.data, now) for i, e in enumerate(events))
        t.events.extend(stored)
        t.info = replace(info, last_id=base + len(stored))
        if closed:
            t.info = replace(t.info, status="completed", closed_at=now)
        if stored or closed:
            self._notify(Change(topic, stored, "completed" if closed else None, epoch=info.epoch))
        return Created("created", self._state(t), tuple(e.id for e in stored), released)

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
        t = self._live(topic)
        if t is None:
            return Appended("not_found")
        d, info = t.durable, t.info
        if d.deleted:
            return Appended("gone", info.last_id, info.closed)
        epoch = pseq = None
        if producer is not None:
            verdict, epoch, pseq = check_producer(d.producers.get(producer.id), producer)
            if verdict == "duplicate" or (info.closed and verdict != "accept"):
                outcome: Literal["duplicate", "closed"] = "duplicate" if verdict == "duplicate" else "closed"
                return Appended(outcome, info.last_id, info.closed, epoch=epoch, seq=pseq)
            if verdict != "accept":
                return Appended(verdict, info.last_id, info.closed, epoch=epoch, seq=pseq)
        if info.closed:
            return Appended("closed", info.last_id, True)
        if seq is not None and d.last_seq is not None and seq <= d.last_seq:
            return Appended("seq_conflict", info.last_id, False)
        if events:
            ids = await self.append(topic, events, close="completed" if close else None)
        else:
            ids = []
            if close:
                await self.close_topic(topic, "completed")
        if producer is not None and epoch is not None and pseq is not None:
            d.producers[producer.id] = (epoch, pseq)
        if seq is not None:
            d.last_seq = seq
        if renew is not None:
            d.deadline = renew
        return Appended("ok", t.info.last_id, t.info.closed, tuple(ids), epoch, pseq)

    async def touch_stream(self, topic: str, deadline: float) -> None:
        t = self._live(topic)
        if t is not None and not t.durable.deleted:
            t.durable.deadline = deadline

    async def delete_stream(self, topic: str) -> Literal["deleted", "soft", "not_found", "gone"]:
        t = self._topics.get(topic)
        if t is None:
            return "not_found"
        if t.durable.deleted:
            return "gone"
        if self._live(topic) is not t or t.durable.deleted:
            return "not_found"  # it had expired
        if t.durable.forks:
            t.durable.deleted = True
            self._notify(Change(topic, deleted=True))
            return "soft"
        self._drop(topic)
        return "deleted"

    async def pin_source(self, source: str, fork: str) -> StreamState | None:
        t = self._live(source)
        if t is None:
            return None
        if not t.durable.deleted:
            t.durable.forks.add(fork)
        return self._state(t)

    async def unpin_source(self, source: str, fork: str) -> None:
        t = self._topics.get(source)
        if t is None:
            return
        t.durable.forks.discard(fork)
        if not t.durable.forks and self._state(t).dead(self.now()):
            self._drop(source)
