"""Server-Sent Events wire format: an encoder and an incremental decoder, with no I/O.

A ``text/event-stream`` body is UTF-8 text made of lines, each ended by CRLF, LF or CR.
Lines accumulate into an event until a blank line dispatches it::

    : a comment, ignored by clients (useful as a heartbeat)
    retry: 3000
    id: 42
    event: update
    data: first line
    data: second line

Each line is ``field: value``; exactly one space after the colon is dropped, a line with
no colon is a field with an empty value, and a line starting with ``:`` is a comment.
``data`` lines are joined with LF, ``id`` is *sticky* (it stays in force for later events
until the server sends another one), ``retry`` sets the reconnection delay in
milliseconds, and unknown fields are ignored.

`Decoder` follows the WHATWG HTML section "Interpreting an event stream" to the letter, so
what it yields is what a browser's ``EventSource`` would dispatch. `encode` produces frames
that any such parser reads back unchanged, except that CR and CRLF inside ``data`` come
back as LF: the format has no way to carry a line ending other than as a line break.

Like h11, nothing here reads or writes sockets: callers feed bytes in and get immutable,
already-validated `ServerSentEvent` objects out.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["Decoder", "ServerSentEvent", "encode", "encode_comment", "encode_retry"]

# Any of the three line endings the format allows. CRLF must come first so that it is
# matched as one ending rather than as CR followed by an (empty-line) LF.
_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    ``id`` is the last event ID in force when the event was dispatched, which is not
    necessarily set by an ``id:`` line of this very event (IDs are sticky).
    ``retry`` is never set by `Decoder` (the spec treats it as stream state, see
    `Decoder.retry`); it exists so that an event can describe a complete frame to encode.
    """

    data: str = ""
    event: str = "message"
    id: str = ""
    retry: int | None = None

    def __post_init__(self) -> None:
        # Validated here as well as in `encode` so an invalid event can never exist:
        # these values could not survive a trip over the wire.
        _check_event(self.event)
        _check_id(self.id)
        if self.retry is not None:
            _check_retry(self.retry)


def _check_event(event: str) -> None:
    if not event:
        # An empty `event:` line means "message" on the receiving end, so allowing it
        # would make the encoded event differ from what is decoded.
        raise ValueError("event type must not be empty")
    if "\r" in event or "\n" in event:
        raise ValueError(f"event type must not contain a line break: {event!r}")


def _check_id(id: str) -> None:
    if "\r" in id or "\n" in id:
        raise ValueError(f"event id must not contain a line break: {id!r}")
    if "\0" in id:
        # Clients silently ignore an id containing NUL, which would break resumption.
        raise ValueError(f"event id must not contain NUL: {id!r}")


def _check_retry(retry: int) -> None:
    if retry < 0:
        # Clients only accept ASCII digits, so a minus sign would make them ignore it.
        raise ValueError(f"retry must be a non-negative number of milliseconds: {retry}")


def _comment_lines(text: str) -> list[str]:
    # An empty comment line is written as a bare ":" to avoid trailing whitespace.
    return [f": {line}" if line else ":" for line in _LINE_END.split(text)]


def encode(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one event frame as UTF-8 bytes, terminated by a blank line.

    Lines are written in the order: comment(s), ``retry``, ``id``, ``event``, ``data``.
    ``data`` is split on CRLF, CR and LF into one ``data:`` line each; the decoder joins
    them with LF, so CR and CRLF in ``data`` are normalised to LF. ``data=""`` writes one
    empty ``data:`` line (an event with empty data), whereas ``data=None`` writes none,
    giving a frame that only sets the id and/or retry, or only carries a comment, and
    dispatches no event. ``id=""`` is meaningful: it resets the client's last event ID.

    Raises `ValueError` for a line break in ``event`` or ``id``, NUL in ``id``, an empty
    ``event`` or a negative ``retry``.
    """
    lines: list[str] = []
    if comment is not None:
        lines.extend(_comment_lines(comment))
    if retry is not None:
        _check_retry(retry)
        lines.append(f"retry: {retry}")
    if id is not None:
        id = str(id)
        _check_id(id)
        lines.append(f"id: {id}")
    if event is not None:
        _check_event(event)
        lines.append(f"event: {event}")
    if data is not None:
        # Always "data: " with the space: the decoder strips exactly one leading space,
        # so data that itself starts with a space survives the round trip.
        lines.extend(f"data: {line}" for line in _LINE_END.split(data))
    lines.append("\n")
    return "\n".join(lines).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """Encode a comment-only frame, e.g. a heartbeat; each line of ``text`` becomes one comment."""
    return ("\n".join(_comment_lines(text)) + "\n\n").encode("utf-8")


def encode_retry(ms: int) -> bytes:
    """Encode a frame that only sets the client's reconnection delay, in milliseconds."""
    _check_retry(ms)
    return f"retry: {ms}\n\n".encode("ascii")


class Decoder:
    """Incremental ``text/event-stream`` parser (WHATWG "Interpreting an event stream").

    Feed it bytes as they arrive, in chunks of any size; each `feed` returns the events
    completed by that chunk. `close` marks the end of one connection's stream: the
    trailing incomplete event, if any, is discarded as the spec requires. The decoder
    may then be reused for the next connection: `last_event_id` and `retry` carry over,
    which is exactly what reconnecting needs.

    ``last_event_id`` is what a client sends as ``Last-Event-ID`` when reconnecting. Per
    the spec, an ``id:`` line only takes effect there at the next blank line: an id whose
    event was cut off by a dropped connection must not be used to resume, or that event
    would be skipped. It may be assigned, e.g. to resume from a persisted id.

    ``retry`` is the most recent valid reconnection time in milliseconds, else None. It
    takes effect as soon as its line is complete, as in the spec.
    """

    __slots__ = (
        "_data",
        "_event",
        "_id_buffer",
        "_last_event_id",
        "_partial",
        "_skip_lf",
        "_started",
        "_utf8",
        "retry",
    )

    def __init__(self) -> None:
        self.retry: int | None = None
        self._last_event_id = ""
        # The spec's "last event ID buffer": set by `id:` lines, committed at blank lines.
        self._id_buffer = ""
        # Invalid bytes become U+FFFD; the incremental decoder keeps a multi-byte
        # character that is split across chunks until it is complete.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # whether the first character (a possible BOM) was seen
        self._skip_lf = False  # the previous chunk ended in CR, so a leading LF is its CRLF
        # Pieces of the incomplete last line, joined only once it is complete, so that a
        # long line arriving in many small chunks costs linear time, not quadratic.
        self._partial: list[str] = []
        self._data: list[str] = []  # data lines of the event being built
        self._event = ""  # the event type buffer

    @property
    def last_event_id(self) -> str:
        return self._last_event_id

    @last_event_id.setter
    def last_event_id(self, value: str) -> None:
        _check_id(value)
        self._last_event_id = self._id_buffer = value

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse the next chunk of the stream; return the events it completed, in order."""
        return self._feed_text(self._utf8.decode(chunk))

    def close(self) -> list[ServerSentEvent]:
        """End the current stream, discarding any incomplete event; always returns ``[]``.

        A list is returned so that callers can treat `feed` and `close` alike.
        """
        # An incomplete UTF-8 sequence at the end could only belong to an unterminated
        # line, which is discarded with everything else that is pending.
        self._utf8.reset()
        self._started = False
        self._skip_lf = False
        self._partial.clear()
        self._data.clear()
        self._event = ""
        self._id_buffer = self._last_event_id
        return []

    def _feed_text(self, text: str) -> list[ServerSentEvent]:
        if not text:
            # Nothing decoded yet (e.g. half of a multi-byte character): in particular
            # keep `_skip_lf` and `_started` as they are until real text arrives.
            return []
        if not self._started:
            self._started = True
            if text[0] == _BOM:
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        if "\n" not in text and "\r" not in text:
            if text:
                self._partial.append(text)
            return []
        if self._partial:
            self._partial.append(text)
            text = "".join(self._partial)
            self._partial.clear()
        # A CR ending the chunk ends a line right now (events are not held back waiting
        # for the next chunk), but if the next chunk starts with LF, that LF belongs to it.
        self._skip_lf = text[-1] == "\r"
        lines = _LINE_END.split(text)
        rest = lines.pop()
        if rest:
            self._partial.append(rest)

        events: list[ServerSentEvent] = []
        # Hot loop: buffers are kept in locals and written back at the end.
        data = self._data
        event_type = self._event
        id_buffer = self._id_buffer
        for line in lines:
            if not line:
                # Dispatch. The last event ID is committed even when nothing is dispatched.
                self._last_event_id = id_buffer
                if data:
                    events.append(ServerSentEvent("\n".join(data), event_type or "message", id_buffer))
                    data.clear()
                event_type = ""
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id":
                if "\0" not in value:
                    id_buffer = value
            # Only ASCII digits: str.isdigit alone also accepts e.g. "²" or "٣".
            elif name == "retry" and value.isascii() and value.isdigit():
                try:
                    self.retry = int(value)
                except ValueError:
                    # More digits than int() accepts (sys.get_int_max_str_digits):
                    # absurd as a delay, so treat it as invalid.
                    pass
        self._event = event_type
        self._id_buffer = id_buffer
        return events
