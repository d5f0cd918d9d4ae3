"""What every wire format shares: frame positions (the SSE ids), resume, and compaction.

A format turns the log, event by event, into a deterministic sequence of frames. One log
event may give several frames (the AI SDK needs `text-start` before the first `text-delta`),
or none; a few frames belong to no event at all (`[DONE]` after a topic closed without a
terminal event, the frames of a `reset`). Every frame has a *position* in that sequence,
and its SSE ``id:`` is that position written as text:

    frame                                       position        id
    the last frame of the group of event N      (N, 0)          "N"
    frame k of the group of event N, not last   (P, k)          "P.k"     P: the event before N
    frame k of a group that no event ends       (P, k)          "P.k"     (the closing frames)

that is, ``"A.k"`` reads "after event A, and k frames of what follows it". Positions are
totally ordered ((A, k) < (B, j) when A < B, or A == B and k < j), so `Cursor` ("resume
after this frame") is a position too, and `Last-Event-ID` resumes any format exactly:

- A reader that sends ``Last-Event-ID: X`` gets exactly the frames whose position is after
  X, in order. The encoder is built with ``after=X`` and fed the log from its first event:
  it keeps its state (which parts are open, which tool calls are pending) but drops every
  frame at or before X. So nothing is sent twice and nothing is skipped, even when the cut
  fell between the frames of one event (``"41.1"``: after `text-start`, before the delta
  that came with it) or in the middle of a text part, a reasoning part or a tool call.
- A plain integer ``N`` is the position (N, 0): the native format's ids and the log's ids
  are the same thing, and "after N" keeps its meaning everywhere.
- The last frame of a stream that a terminal event ends (``[DONE]``, ``RUN_FINISHED``) has
  the id of that event, so resuming from it gets nothing more (a 204 for EventSource).
  The closing frames of a topic closed without a terminal event are positioned after its
  last event L (``"L.1"``, ``"L.2"``): a reader cut before them gets them on resume, a
  reader that saw them gets nothing more.
- A reset (retention dropped what the reader asked for, first available id F) is a group
  whose last frame is (F - 1, 0), exactly the id the native `reset` frame has always had.

Compaction merges adjacent delta frames of one part (text, reasoning, tool arguments) into
one frame that takes the position of the last one merged. A merged frame therefore covers
a contiguous range of positions and resuming from its id means "after all of them". It
only merges frames of one `encode` call, and only frames past the resume cursor, so it
never changes what a resumed reader receives, only how many frames carry it.

Like `ssehub.sse`, nothing here does I/O: events in, bytes out.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, ClassVar

from .. import sse
from ..events import Event
from ..exceptions import InvalidCursor, InvalidInput
from ..parsing import parse_integer

__all__ = ["Cursor", "Encoder"]


@dataclass(frozen=True, order=True, slots=True)
class Cursor:
    """A position in a format's frame sequence: after event `after`, and `frames` frames of what follows."""

    after: int = 0
    frames: int = 0

    def __post_init__(self) -> None:
        if self.after < 0 or self.frames < 0:
            raise InvalidCursor(f"a cursor is never negative: {self.after}.{self.frames}")

    def __str__(self) -> str:
        return f"{self.after}.{self.frames}" if self.frames else str(self.after)

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """``"N"`` or ``"N.k"`` (as sent in `Last-Event-ID` or ``?after=``); InvalidCursor otherwise."""
        after, dot, frames = text.partition(".")
        try:
            return cls(
                parse_integer(after, "a cursor", maximum=_MAX_CURSOR),
                parse_integer(frames, "a cursor", maximum=_MAX_CURSOR) if dot else 0,
            )
        except InvalidInput:
            raise InvalidCursor(f"a cursor is N or N.k with non-negative integers, got {text[:40]!r}") from None


_MAX_CURSOR = 10**18 - 1


@dataclass(slots=True, eq=False)
class _Frame:
    # What the format serialises: JSON-able data, or text sent as it is.
    data: Any
    # The SSE event name; None writes no `event:` line (the client sees "message").
    event: str | None = None
    # Adjacent frames with the same key merge when compacting; None never merges.
    key: Hashable = None
    # For a mergeable frame: the name of the data field that holds the text, and its pieces.
    field: str = ""
    pieces: list[str] = dataclass_field(default_factory=list)
    # For a mergeable frame that may be sent unmerged: its data text exactly as stored.
    raw: str | None = None
    position: Cursor = Cursor()


class Encoder(ABC):
    """A pure, stateful encoder: log events in, SSE frames out (see the module docstring for ids).

    Feed it every event of the topic in id order, from the first, with `encode` (a page read
    from the log, or what a live subscriber woke up for); `reset` when the store says the
    history the reader asked for is gone; `close` once the topic has ended and every event
    was fed. Each returns the bytes to write, possibly empty. Frames at or before the
    cursor the encoder was built with are dropped: that is how a reader resumes.
    """

    #: The value of ``?format=``.
    name: ClassVar[str]
    #: Whether `encode` compacts when not told.
    compact_default: ClassVar[bool] = False
    #: Extra response headers the format needs (the SSE ones are the HTTP layer's).
    headers: ClassVar[Mapping[str, str]] = {}
    #: Whether frames depend on earlier events: then a resumed reader's encoder must be fed from the start.
    stateful: ClassVar[bool] = True

    def __init__(self, *, after: Cursor | int = 0) -> None:
        cursor = after if isinstance(after, Cursor) else Cursor(after)
        self._threshold: Cursor | None = cursor if cursor > Cursor() else None
        self._last_id = 0  # the id of the last event fed: the P of the next group's positions
        self._group: list[_Frame] = []
        self._quiet = False  # building a group every frame of which is dropped: skip the work

    @property
    def last_id(self) -> int:
        """The id of the last event fed (or the id a reset moved to): where the next read starts."""
        return self._last_id

    @property
    def ended(self) -> bool:
        """The stream is over (a terminal event was encoded): later events give no frames."""
        return False

    # -- the interface -------------------------------------------------------------------------------------

    def encode(self, events: Iterable[Event], *, compact: bool | None = None) -> bytes:
        """The frames of `events` (in id order; events at or before `last_id` are ignored)."""
        out: list[_Frame] = []
        threshold = self._threshold
        for event in events:
            if event.id <= self._last_id:
                continue  # a page that overlaps what was fed already
            self._quiet = threshold is not None and event.id <= threshold.after
            self._event(event)
            self._seal(out, Cursor(event.id))
            self._last_id = event.id
            threshold = self._threshold
        self._quiet = False
        return self._render(out, self.compact_default if compact is None else compact)

    def feed(self, event: Event) -> bytes:
        """One live event: `encode` without compaction."""
        return self.encode((event,), compact=False)

    def reset(self, first_id: int, requested_after: int) -> bytes:
        """Retention dropped the events the reader asked for: the oldest left is `first_id`."""
        self._reset(first_id, requested_after)
        out: list[_Frame] = []
        if first_id - 1 > self._last_id:
            self._seal(out, Cursor(first_id - 1))
            self._last_id = first_id - 1
        else:
            self._seal(out, None)
        return self._render(out, False)

    def close(self, status: str) -> bytes:
        """The topic ended with `status` (completed, failed, cancelled) after every event was fed."""
        self._close(status)
        out: list[_Frame] = []
        self._seal(out, None)
        return self._render(out, False)

    def join(self) -> bytes:
        """What a reader that starts here without any earlier frame needs to make sense of the rest.

        For a reader that joins the stream in its middle (e.g. at the live end): the opening
        frames of what is in progress (`start`, the text part being written, ...). None of
        them has a position of its own; the last one carries the current position, so that
        a reader cut after it resumes as any other, and one cut before it simply joins again.
        """
        self._join()
        frames, self._group = self._group, []
        if not frames:
            return b""
        position = Cursor(self._last_id)
        return b"".join(self._dump(frame, position if i == len(frames) - 1 else None) for i, frame in enumerate(frames))

    # -- what a format implements ----------------------------------------------------------------------------

    @abstractmethod
    def _event(self, event: Event) -> None:
        """Add the frames of one log event (with `_emit`)."""

    @abstractmethod
    def _reset(self, first_id: int, requested_after: int) -> None:
        """Add the frames that tell the reader history was dropped."""

    def _close(self, status: str) -> None:
        """Add the frames that end the stream of a topic closed without a terminal event."""

    def _join(self) -> None:
        """Add the opening frames of what is in progress (see `join`)."""

    def _emit(
        self,
        data: Any,
        *,
        event: str | None = None,
        key: Hashable = None,
        field: str = "",
        text: str = "",
        raw: str | None = None,
    ) -> None:
        """Add a frame to the group being built.

        With a `key`, the frame is mergeable: `data[field]` is `text`, and adjacent frames
        with an equal key concatenate their texts when compacting. `raw`, if given, is what
        is sent for the frame when nothing was merged into it.
        """
        if self._quiet:
            return
        frame = _Frame(data, event, key, field, raw=raw)
        if key is not None:
            frame.pieces.append(text)
        self._group.append(frame)

    # -- positions, compaction, serialisation -----------------------------------------------------------------

    def _seal(self, out: list[_Frame], final: Cursor | None) -> None:
        # Positions: (P, 1), (P, 2), ... and, for a group an event ends, that event's (N, 0) for the last.
        group, self._group = self._group, []
        for k, frame in enumerate(group, 1):
            frame.position = Cursor(self._last_id, k)
        if final is not None and group:
            group[-1].position = final
        end = final if final is not None else Cursor(self._last_id, len(group))
        threshold = self._threshold
        if threshold is None:
            out.extend(group)
            return
        out.extend(f for f in group if f.position > threshold)
        if end > threshold:
            self._threshold = None  # past the resume point: every later frame is sent

    def _render(self, frames: Sequence[_Frame], compact: bool) -> bytes:
        if compact and len(frames) > 1:
            frames = _merged(frames)
        return b"".join(self._dump(f, f.position) for f in frames)

    def _dump(self, frame: _Frame, position: Cursor | None) -> bytes:
        data = frame.data
        if frame.key is not None:
            if frame.raw is not None and len(frame.pieces) == 1:
                data = frame.raw
            else:
                data = {**data, frame.field: "".join(frame.pieces)}
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return sse.encode(text, event=frame.event, id=None if position is None else str(position))


def _merged(frames: Sequence[_Frame]) -> list[_Frame]:
    out: list[_Frame] = []
    for frame in frames:
        last = out[-1] if out else None
        if last is not None and frame.key is not None and frame.key == last.key:
            last.pieces.extend(frame.pieces)
            last.position = frame.position
        else:
            out.append(frame)
    return out
