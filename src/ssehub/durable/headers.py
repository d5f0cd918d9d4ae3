"""The protocol's request headers, parsed and validated, and the response values built from them.

Every parser raises InvalidInput (a 400) with a message that names the header and what was
wrong, so a malformed request is refused before anything is read or written.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ..exceptions import InvalidInput
from ..parsing import parse_integer

#: The protocol's request headers, for a CORS preflight's Access-Control-Allow-Headers.
REQUEST_HEADERS = (
    "If-None-Match",
    "Stream-Seq",
    "Stream-TTL",
    "Stream-Expires-At",
    "Stream-Closed",
    "Producer-Id",
    "Producer-Epoch",
    "Producer-Seq",
    "Stream-Forked-From",
    "Stream-Fork-Offset",
    "Stream-Fork-Sub-Offset",
)
#: Its response headers, for Access-Control-Expose-Headers: a browser client reads them.
RESPONSE_HEADERS = (
    "Stream-Next-Offset",
    "Stream-Cursor",
    "Stream-Up-To-Date",
    "Stream-Closed",
    "Stream-TTL",
    "Stream-Expires-At",
    "Stream-SSE-Data-Encoding",
    "Producer-Epoch",
    "Producer-Seq",
    "Producer-Expected-Seq",
    "Producer-Received-Seq",
    "ETag",
)

__all__ = [
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "CURSOR_EPOCH",
    "CURSOR_INTERVAL",
    "ForkRequest",
    "etag",
    "etag_matches",
    "fork_request",
    "is_true",
    "media_type",
    "producer",
    "response_cursor",
    "stream_seq",
    "stream_ttl",
    "expires_at",
]

#: Producer-Epoch and Producer-Seq stay within what a JavaScript number holds exactly.
MAX_SAFE_INTEGER = 2**53 - 1
#: Stream-TTL above ten years is surely a mistake.
MAX_TTL = 10 * 365 * 86_400
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]*")
_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
_MAX_TOKEN = 256


def is_true(value: str | None) -> bool:
    """Stream-Closed counts only as `true` (any case); any other value is as if it were absent."""
    return value is not None and value.strip().lower() == "true"


def media_type(content_type: str | None) -> str:
    """`Text/Plain; charset=utf-8` -> `text/plain`: what two content types are compared by."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _decimal(name: str, value: str, maximum: int) -> int:
    message = f"{name} must be a decimal integer from 0 to {maximum} without sign or leading zeros"
    if not _DECIMAL_RE.fullmatch(value):
        raise InvalidInput(message)
    try:
        return parse_integer(value, name, maximum=maximum)
    except InvalidInput:
        raise InvalidInput(message) from None


def stream_ttl(value: str | None) -> int | None:
    return None if value is None else _decimal("Stream-TTL", value, MAX_TTL)


def expires_at(value: str | None) -> float | None:
    """Stream-Expires-At as Unix seconds; RFC 3339 with `Z` or an offset."""
    if value is None:
        return None
    if not _RFC3339_RE.fullmatch(value.strip()):
        raise InvalidInput("Stream-Expires-At must be an RFC 3339 timestamp such as 2030-01-01T00:00:00Z")
    try:
        return datetime.fromisoformat(value.strip().upper().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidInput(f"Stream-Expires-At {value[:40]!r} is not a valid date and time") from None


def stream_seq(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= _MAX_TOKEN:
        raise InvalidInput(f"Stream-Seq must be 1-{_MAX_TOKEN} characters")
    return value


def producer(headers: Mapping[str, str]) -> tuple[str, int, int] | None:
    """The producer's (Producer-Id, Producer-Epoch, Producer-Seq): all three headers or none."""
    values = [headers.get(h) for h in ("producer-id", "producer-epoch", "producer-seq")]
    if all(v is None for v in values):
        return None
    pid, epoch, seq = values
    if pid is None or epoch is None or seq is None:
        raise InvalidInput("Producer-Id, Producer-Epoch and Producer-Seq come all three together")
    if not 1 <= len(pid) <= _MAX_TOKEN:
        raise InvalidInput(f"Producer-Id must be 1-{_MAX_TOKEN} characters")
    numbers = [
        parse_integer(v, name, maximum=MAX_SAFE_INTEGER)
        for name, v in (("Producer-Epoch", epoch), ("Producer-Seq", seq))
    ]
    return pid, numbers[0], numbers[1]


@dataclass(frozen=True, slots=True)
class ForkRequest:
    """The fork headers of a PUT: the source's path, and where in it the fork diverges."""

    source: str
    offset: str | None
    sub_offset: int


def fork_request(headers: Mapping[str, str]) -> ForkRequest | None:
    source = headers.get("stream-forked-from")
    offset = headers.get("stream-fork-offset")
    sub = headers.get("stream-fork-sub-offset")
    if source is None:
        if offset is not None or sub is not None:
            raise InvalidInput("Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From")
        return None
    if not source.strip():
        raise InvalidInput("Stream-Forked-From must name the source stream's path")
    sub_offset = 0 if sub is None else _decimal("Stream-Fork-Sub-Offset", sub, MAX_SAFE_INTEGER)
    if sub_offset and offset is None:
        raise InvalidInput("Stream-Fork-Sub-Offset needs Stream-Fork-Offset: it counts from there")
    return ForkRequest(source.strip(), offset, sub_offset)


def etag(incarnation: str, start: str, end: str, closed: bool) -> str:
    """`"{stream}:{start}:{end}"`, with `:c` once the stream is closed, so that a close changes it."""
    return f'"{incarnation}:{start}:{end}{":c" if closed else ""}"'


def etag_matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or tag in candidates


#: Stream-Cursor counts 20-second intervals since this instant (2024-10-09T00:00:00Z).
CURSOR_EPOCH = 1_728_432_000
CURSOR_INTERVAL = 20


def response_cursor(client: str | None, now: float, rng: random.Random | None = None) -> str:
    """The Stream-Cursor to answer with: the current interval, or, when the client already has
    that one (or a later one), a strictly larger cursor 1-3600 seconds of jitter ahead, so that
    a CDN collapsing on (offset, cursor) never serves a client its own request back forever."""
    current = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if client is None or not client.isascii() or not client.isdigit() or len(client) > 18 or int(client) < current:
        return str(current)
    jitter = (rng or random).randint(1, 3600)
    return str(int(client) + max(1, -(-jitter // CURSOR_INTERVAL)))
