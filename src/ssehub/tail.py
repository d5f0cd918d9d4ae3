"""A topic's in-memory tail: the recent frames, already SSE-encoded, and a wake-up.

The hub keeps one `Tail` per topic that has local subscribers. Frames are
encoded once, when the store reports the append, and every subscriber writes
the same bytes. The events themselves are kept beside their frames, for the
readers of the other wire formats (`ssehub.formats`), which encode them their
own way. Ids in the window are contiguous, so a cursor maps to a list
index with a subtraction. Waiting subscribers are woken by one callback
scheduled on the first push of a loop iteration, however many events arrive
in it; publishing itself never touches a subscriber.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .events import Event
from .formats.native import encode_event

__all__ = ["Tail", "encode_event", "encode_events"]


def encode_events(events: Iterable[Event]) -> bytes:
    return b"".join(encode_event(e) for e in events)


class Tail:
    def __init__(self, name: str, window: int) -> None:
        self.name = name
        self.window = window
        self._frames: list[bytes] = []
        self._events: list[Event] = []  # _events[i] is the event of _frames[i]
        self._base = 0  # the id of _frames[0]
        self.last_id = 0  # the highest id known to exist
        self.first_id = 1  # the oldest id the store still had when the tail was loaded
        self.status = "open"
        self.deleted = False
        self.epoch = ""  # the epoch of the log these frames come from, once known
        self.generation = 0  # how often the log was replaced under this tail (a Redis lost its data)
        self.subscribers = 0
        self.loaded: asyncio.Future[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._wake_scheduled = False

    def __repr__(self) -> str:
        return f"<Tail {self.name!r} last_id={self.last_id} frames={len(self._frames)} status={self.status}>"

    @property
    def ended(self) -> bool:
        return self.deleted or self.status != "open"

    def push(self, events: tuple[Event, ...]) -> None:
        """Add events reported by the store, in id order."""
        if not events:
            return
        end = self._base + len(self._frames)  # the id the next frame must have
        if events[-1].id < end:
            return  # already have them (a shared store's follower may overlap)
        if not self._frames or events[0].id > end:
            self._frames, self._events, self._base = [], [], events[0].id  # empty or a gap: start afresh
        elif events[0].id < end:
            events = tuple(e for e in events if e.id >= end)
        self._frames.extend(map(encode_event, events))
        self._events.extend(events)
        self.last_id = max(self.last_id, events[-1].id)
        # Trim in steps of half a window so the cost of `del` is amortised over many pushes.
        if len(self._frames) > self.window + self.window // 2:
            drop = len(self._frames) - self.window
            del self._frames[:drop]
            del self._events[:drop]
            self._base += drop
        self.wake()

    def restart(self, epoch: str) -> None:
        """The store lost the log: what follows is a new log, `epoch`, from id 1."""
        self._frames, self._events, self._base = [], [], 0
        self.last_id, self.first_id, self.status = 0, 1, "open"
        self.epoch = epoch
        self.generation += 1
        self.wake()

    def after(self, cursor: int) -> tuple[bytes, int] | None:
        """The frames with id > cursor and the new cursor, or None if the window starts later."""
        if self._frames and cursor + 1 >= self._base:
            index = cursor + 1 - self._base
            if index >= len(self._frames):
                return b"", cursor
            return b"".join(self._frames[index:]), self._base + len(self._frames) - 1
        if cursor >= self.last_id:
            return b"", cursor
        return None

    def events_after(self, cursor: int, limit: int) -> list[Event] | None:
        """Up to `limit` events with id > cursor, or None if the window starts later (as `after`)."""
        if self._events and cursor + 1 >= self._base:
            index = cursor + 1 - self._base
            return self._events[index : index + limit]
        if cursor >= self.last_id:
            return []
        return None

    def wake(self) -> None:
        """Wake every waiting subscriber, once per loop iteration however often it is called."""
        if not self._wake_scheduled:
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake_now)

    def _wake_now(self) -> None:
        self._wake_scheduled = False
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self) -> None:
        """Wait until something changes, or until the hub's heartbeat tick.

        Each waiter has its own future: cheaper than a timeout and a shield per
        wait on the hot path, and a waiter that is cancelled affects no other.
        """
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut
