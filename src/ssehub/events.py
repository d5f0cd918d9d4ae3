"""The values that move through a hub: events going in, events stored, topic state.

They are immutable and validated when built (the h11 way), so a store or a
subscriber never has to re-check what it was handed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .exceptions import InvalidInput, InvalidTopic

__all__ = [
    "TERMINAL_STATUSES",
    "Event",
    "NewEvent",
    "Status",
    "TopicInfo",
    "validate_topic",
]

Status = Literal["open", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

_TOPIC_RE = re.compile(r"[A-Za-z0-9._:/-]{1,200}")
_EVENT_NAME_RE = re.compile(r"[A-Za-z0-9._:/-]{1,100}")


def validate_topic(name: str) -> str:
    if not _TOPIC_RE.fullmatch(name):
        raise InvalidTopic(f"invalid topic name {name[:50]!r}: use 1-200 characters of A-Z a-z 0-9 . _ : / -")
    return name


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event on its way into a topic: a name and its data as text.

    JSON data is kept as its compact JSON text, so the stored form is exactly
    what subscribers receive in the SSE `data:` field.
    """

    event: str = "message"
    data: str = ""

    def __post_init__(self) -> None:
        if self.event != "message" and not _EVENT_NAME_RE.fullmatch(self.event):
            raise InvalidInput(f"invalid event name {self.event[:50]!r}: use 1-100 characters of A-Z a-z 0-9 . _ : / -")
        # A lone surrogate (JSON's "\ud800" decodes to one) is a str that no store can write as UTF-8.
        # isascii() is O(1) in CPython: the common event pays nothing for this.
        if not self.data.isascii():
            try:
                self.data.encode()
            except UnicodeEncodeError:
                raise InvalidInput("event data holds a lone surrogate, which UTF-8 cannot encode") from None

    @classmethod
    def from_json(cls, event: str, data: Any) -> NewEvent:
        try:
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"event data is not JSON-serialisable: {exc}") from None
        return cls(event, text)

    @property
    def size(self) -> int:
        data = self.data
        return (len(data) if data.isascii() else len(data.encode())) + len(self.event)


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event: its per-topic id, name, data text and append time (Unix seconds)."""

    id: int
    event: str
    data: str
    time: float = 0.0

    def json(self) -> Any:
        return json.loads(self.data)

    def as_dict(self) -> dict[str, Any]:
        # `data` stays text, exactly what the SSE `data:` field carries: a text/plain "0" is not the number 0.
        return {"id": self.id, "event": self.event, "data": self.data, "time": self.time}


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic's state as the store knows it.

    `first_id` is the oldest id still stored (retention may have dropped the
    ones before it); an empty topic has `first_id == last_id + 1`. `epoch` is a
    random id the store creates with the log: ids count again from 1 in a new
    log (the topic was deleted and created again, or a Redis lost its data), so
    an id means something only together with its epoch.
    """

    name: str
    last_id: int = 0
    first_id: int = 1
    status: str = "open"
    created: float = 0.0
    updated: float = 0.0
    closed_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    epoch: str = ""

    @property
    def closed(self) -> bool:
        return self.status != "open"

    def as_dict(self, subscribers: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "topic": self.name,
            "last_id": self.last_id,
            "first_id": self.first_id,
            "status": self.status,
            "created": self.created,
            "updated": self.updated,
            "closed_at": self.closed_at,
            "epoch": self.epoch,
        }
        if self.meta:
            out["meta"] = self.meta
        if subscribers is not None:
            out["subscribers"] = subscribers
        return out
