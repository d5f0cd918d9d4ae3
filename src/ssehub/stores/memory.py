"""`memory://`: the whole log in a dict. For tests and throwaway use; lost on exit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..events import Event, NewEvent, TopicInfo
from ..exceptions import IdempotencyConflict, TopicClosed, TopicNotFound
from .base import Change, Page, Store, new_epoch

__all__ = ["MemoryStore"]


@dataclass
class _Topic:
    info: TopicInfo
    events: list[Event] = field(default_factory=list)
    keys: dict[str, tuple[list[int], float, str | None]] = field(default_factory=dict)  # ids, time, fingerprint


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
        t.info = replace(t.info, last_id=last_id, first_id=first_id, updated=now)
        if close is not None:
            t.info = replace(t.info, status=close, closed_at=now)
        if idempotency_key is not None:
            t.keys[idempotency_key] = (ids, now, fingerprint)
        self._notify(Change(topic, stored, close, epoch=t.info.epoch))
        return ids

    def _topic(self, topic: str, now: float) -> _Topic:
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _Topic(TopicInfo(topic, created=now, updated=now, epoch=new_epoch()))
        return t

    async def read(self, topic: str, after: int, limit: int) -> Page | None:
        t = self._topics.get(topic)
        if t is None:
            return None
        start = max(0, after + 1 - t.info.first_id)
        return Page(t.events[start : start + limit], t.info.first_id, t.info.last_id, t.info.status, t.info.epoch)

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
            n for n, t in self._topics.items() if t.info.closed_at is not None and t.info.closed_at + self.ttl <= now
        ]
        for name in gone:
            await self.delete_topic(name)
        for t in self._topics.values():
            expired = [k for k, (_, at, _) in t.keys.items() if at + self.key_ttl <= now]
            for k in expired:
                del t.keys[k]
        return len(gone)
