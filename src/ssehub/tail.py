"""A topic's in-memory tail: the recent frames, already SSE-encoded, and a wake-up.

The hub keeps one `Tail` per topic that has local subscribers. Frames are
encoded once, when the store reports the append, and every subscriber writes
the same bytes. The events themselves are kept beside their frames, for the
readers of the other wire formats (`ssehub.formats`), which encode them their
own way. Ids in the window are contiguous, so a cursor maps to a list
index with a subtraction. Waiting subscribers are woken by one callback
scheduled on the first push of a loop iteration, however many events arrive
in it; publishing itself never touches a subscriber. A subscriber that can
write to its socket at once (a `Taker`) writes the new frames in that callback
instead, and goes on waiting: no task runs per subscriber per event.

The window is bounded twice: by count (`window` frames) and by bytes (`max_bytes`, counted as
`nbytes`: each frame's length twice, for the frame and its event's text, plus a fixed overhead per
entry). The hub trims tails further when all of them together pass their total (`trim`). A reader
takes at most `max_bytes` of frames at a time (`after`), so however far behind it is, it holds
one bounded chunk.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable, Sequence
from typing import Protocol

from .events import Event
from .formats.native import encode_event

__all__ = ["ENTRY_OVERHEAD", "Tail", "encode_event", "encode_events", "encode_page"]

#: Bytes counted per entry of a tail beyond its frame and its event's text: the objects that hold them.
ENTRY_OVERHEAD = 256


def encode_events(events: Iterable[Event]) -> bytes:
    return b"".join(encode_event(e) for e in events)


def encode_page(events: Sequence[Event], max_bytes: int) -> tuple[bytes, int]:
    """The frames of the first events that fit in `max_bytes` (at least one), and how many they are.

    A page read from the store is bounded by its events' text; a frame can be larger than its text
    (a `data:` line for each line of it), so the frames are bounded again here.
    """
    frames: list[bytes] = []
    size = 0
    for event in events:
        frame = encode_event(event)
        size += len(frame)
        if frames and size > max_bytes:
            break
        frames.append(frame)
    return b"".join(frames), len(frames)


class Taker(Protocol):
    """A waiter that may take what the tail has gained without being woken (see `Tail.wait`)."""

    def take(self) -> bool:
        """Take what is new now, in the wake's own callback, and wait on; False: wake me instead."""
        ...


class Tail:
    def __init__(self, name: str, window: int, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.name = name
        self.window = window
        self.max_bytes = max_bytes
        self._frames: list[bytes] = []
        self._events: list[Event] = []  # _events[i] is the event of _frames[i]
        # _ends[i]: the bytes of every frame ever pushed up to and including _frames[i] (since the last start
        # afresh); _start: the same count before _frames[0]. A span's size is a subtraction, a cut a bisection.
        self._ends: list[int] = []
        self._start = 0
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
        self._takers: list[tuple[asyncio.Future[None], Taker]] = []
        self._wake_scheduled = False

    def __repr__(self) -> str:
        return f"<Tail {self.name!r} last_id={self.last_id} frames={len(self._frames)} status={self.status}>"

    @property
    def nbytes(self) -> int:
        """The memory this tail's window is counted as (see the module's docstring)."""
        if not self._ends:
            return 0
        return 2 * (self._ends[-1] - self._start) + ENTRY_OVERHEAD * len(self._ends)

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
            self._clear(events[0].id)  # empty or a gap: start afresh
        elif events[0].id < end:
            events = tuple(e for e in events if e.id >= end)
        frames = list(map(encode_event, events))
        total = self._ends[-1] if self._ends else self._start
        for frame in frames:
            total += len(frame)
            self._ends.append(total)
        self._frames.extend(frames)
        self._events.extend(events)
        self.last_id = max(self.last_id, events[-1].id)
        # Trim in steps (half a window, a quarter of the bytes) so the cost of `del` is amortised over many pushes.
        if len(self._frames) > self.window + self.window // 2:
            self._drop(len(self._frames) - self.window)
        if self.nbytes > self.max_bytes:
            self.trim(self.max_bytes * 3 // 4)
        self.wake()

    def trim(self, max_bytes: int) -> None:
        """Drop the oldest frames until the window counts at most `max_bytes` (perhaps nothing left)."""
        ends, count, start = self._ends, len(self._ends), self._start
        drop = 0
        while drop < count and 2 * (ends[-1] - start) + ENTRY_OVERHEAD * (count - drop) > max_bytes:
            start = ends[drop]
            drop += 1
        if drop:
            self._drop(drop)

    def _drop(self, count: int) -> None:
        self._start = self._ends[count - 1]
        del self._frames[:count]
        del self._events[:count]
        del self._ends[:count]
        self._base += count

    def _clear(self, base: int) -> None:
        self._frames, self._events, self._ends, self._start, self._base = [], [], [], 0, base

    def restart(self, epoch: str) -> None:
        """The store lost the log: what follows is a new log, `epoch`, from id 1."""
        self._clear(0)
        self.last_id, self.first_id, self.status = 0, 1, "open"
        self.epoch = epoch
        self.generation += 1
        self.wake()

    def after(self, cursor: int, max_bytes: int | None = None) -> tuple[bytes, int] | None:
        """The frames with id > cursor (at most `max_bytes` of them, but at least one) and the new cursor,
        or None if the window starts later."""
        if self._frames and cursor + 1 >= self._base:
            index = cursor + 1 - self._base
            count = len(self._frames)
            if index >= count:
                return b"", cursor
            end = count
            if max_bytes is not None:
                ends = self._ends
                before = ends[index - 1] if index else self._start
                if ends[-1] - before > max_bytes:
                    # The last frame that still fits, but never none: one event larger than the bound goes alone.
                    end = max(index + 1, bisect.bisect_right(ends, before + max_bytes, index, count))
            if index + 1 == end:
                return self._frames[index], self._base + index
            return b"".join(self._frames[index:end]), self._base + end - 1
        if cursor >= self.last_id:
            return b"", cursor
        return None

    def events_after(self, cursor: int, limit: int, max_bytes: int | None = None) -> list[Event] | None:
        """Up to `limit` events with id > cursor (their frames at most `max_bytes`, but at least one event),
        or None if the window starts later (as `after`)."""
        if self._events and cursor + 1 >= self._base:
            index = cursor + 1 - self._base
            end = min(index + limit, len(self._events))
            if max_bytes is not None and end > index + 1:
                ends = self._ends
                before = ends[index - 1] if index else self._start
                if ends[end - 1] - before > max_bytes:
                    end = max(index + 1, bisect.bisect_right(ends, before + max_bytes, index, end))
            return self._events[index:end]
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
        if self._takers:
            takers, self._takers = self._takers, []
            for entry in takers:
                fut, taker = entry
                if fut.done():
                    continue  # cancelled: its subscriber has gone
                if taker.take():
                    self._takers.append(entry)
                else:
                    fut.set_result(None)

    def wait(self, taker: Taker | None = None) -> asyncio.Future[None]:
        """What to await until something changes, or until the hub's heartbeat tick.

        Each waiter has its own future: cheaper than a timeout and a shield per
        wait on the hot path, and a waiter that is cancelled affects no other.
        A plain future, not a coroutine around it: an idle subscriber holds one.

        A `taker` is asked first, at each wake, whether it takes what is new itself (a subscriber
        that writes the frames to its socket there and then): its future is then left waiting,
        and no task of its own runs for the event. It is woken when it declines.
        """
        fut = asyncio.get_running_loop().create_future()
        if taker is None:
            self._waiters.append(fut)
        else:
            self._takers.append((fut, taker))
        return fut
