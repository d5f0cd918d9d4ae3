"""Reading what a request asks for: cursors, limits, bodies, events, idempotency keys.

Each function either returns a valid value or raises an `InvalidInput` that the
error handling turns into a precise 4xx; nothing here writes anything. Integers and
JSON are read with `ssehub.parsing`, within its bounds.

No request may hold the event loop for long, so a JSON body above `OFF_LOOP_BYTES` is parsed
in a worker process (`Offload`, one per app, which its lifespan shuts down): json.loads of
8 MB takes a fifth of a second, and a thread would hold the GIL as long.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from ..events import NewEvent
from ..exceptions import EventTooLarge, InvalidCursor, InvalidInput, TooManyRequests
from ..formats import FORMATS, Cursor
from ..parsing import loads, parse_integer

__all__ = [
    "MAX_VALUES",
    "OFFLOAD_KEY",
    "OFF_LOOP_BYTES",
    "Offload",
    "checked_idempotency_key",
    "content_length",
    "idempotency_key",
    "json_events",
    "mount_prefix",
    "offload_of",
    "parse_cursor",
    "parse_limit",
    "publish_headers",
    "query_value",
    "read_body",
    "read_json_object",
    "receive_body",
    "request_cursor",
    "request_format",
    "request_position",
    "text_event",
]

#: The largest cursor: event ids stay far below it.
MAX_CURSOR = 10**18 - 1

#: JSON bodies above this many bytes are parsed off the event loop: below it a parse takes a few ms.
OFF_LOOP_BYTES = 256 * 1024

#: The most JSON values (arrays, objects, scalars) in a body that is handed on whole: an agent call's.
MAX_VALUES = 100_000

#: Where `HubApp` puts its `Offload` in each request's scope.
OFFLOAD_KEY = "ssehub.offload"

_T = TypeVar("_T")


class Offload:
    """The worker processes that parse large bodies, started on first use; `close()` stops them."""

    def __init__(self, workers: int = 2, queue: int = 8) -> None:
        self.workers = workers
        #: Large bodies parsed or waiting at once, at most: each waiting one is held twice (here and in the queue).
        self.queue = queue
        self._pending = 0
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, size: int, function: Callable[..., _T], *args: Any) -> _T:
        """`function(*args)`, here for an input of `size` bytes up to OFF_LOOP_BYTES (or with no workers),
        else in a worker process."""
        if size <= OFF_LOOP_BYTES or self.workers < 1:
            return function(*args)
        if self._pool is None:
            # spawn, not fork: a forked child of a process with threads (the SQLite writer) may inherit a held lock.
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_end_with_parent,
                initargs=(os.getpid(),),
            )
        if self._pending >= self.queue:
            raise TooManyRequests(f"{self._pending} large request bodies are being parsed already; retry")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        except BrokenProcessPool:
            # A worker died (e.g. the OOM killer): the next request gets a new pool.
            self.close()
            raise TooManyRequests("the server could not parse the body just now; retry") from None
        finally:
            self._pending -= 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _end_with_parent(parent: int) -> None:
    """In each worker process: exit when the server process is gone, however it ended. A server that ends by
    a signal (or a SIGKILL) runs no cleanup, and a worker waiting for work would wait for ever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="ssehub-offload-watch", daemon=True).start()


_INLINE = Offload(0)  # for a request that did not come through HubApp: every body is parsed where it is


def offload_of(scope: Scope) -> Offload:
    found = scope.get(OFFLOAD_KEY)
    return found if isinstance(found, Offload) else _INLINE


def parse_cursor(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    return parse_integer(value, name, maximum=MAX_CURSOR, error=InvalidCursor)


def request_cursor(request: Request) -> int | None:
    """The cursor a subscriber asks for: `Last-Event-ID`, else `?after=`, else None."""
    header = parse_cursor(request.headers.get("last-event-id"), "Last-Event-ID")
    # A reconnecting EventSource sends Last-Event-ID but keeps the original ?after=: the header is newer.
    return header if header is not None else parse_cursor(request.query_params.get("after"), "after")


def request_position(request: Request) -> Cursor | None:
    """What a reader of a wire format asks for: `Last-Event-ID`, else `?after=`, as N or N.k; else None."""
    for given in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if given:
            return Cursor.parse(given)
    return None


def request_format(request: Request) -> tuple[str, bool | None]:
    """`?format=` (native when absent) and `?compact=` (None when absent: the format's own default)."""
    query = request.query_params
    name = query.get("format") or "native"
    if name not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {name[:40]!r}")
    compact = query.get("compact")
    if compact is None:
        return name, None
    if compact not in _BOOLEANS:
        raise InvalidInput(f"compact must be 1 or 0, got {compact[:40]!r}")
    return name, _BOOLEANS[compact]


_BOOLEANS = {"1": True, "true": True, "0": False, "false": False}


def mount_prefix(request: Request) -> str:
    """Where the hub is mounted: the URLs it hands out are relative to it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def parse_limit(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    return parse_integer(value, "limit", minimum=1, maximum=maximum)


def content_length(declared: str | None, limit: int) -> None:
    """Refuse a declared Content-Length above `limit` before reading the body (the server checks its syntax)."""
    if declared is not None and parse_integer(declared, "Content-Length", maximum=2**63 - 1) > limit:
        raise EventTooLarge(f"request body of {declared} bytes is above the limit of {limit}")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading them all."""
    return await receive_body(request.receive, limit, request.headers.get("content-length"))


async def receive_body(receive: Receive, limit: int, declared: str | None) -> bytes:
    """The body from `receive` (the hot publish route makes no Request), refusing more than `limit` bytes
    without reading them all; `declared` is its Content-Length, if any."""
    content_length(declared, limit)
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the common case: the whole body in one message
        if len(body) > limit:
            raise EventTooLarge(f"request body is above the limit of {limit} bytes")
        return body
    parts = bytearray(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        parts += message.get("body", b"")
        if len(parts) > limit:
            raise EventTooLarge(f"request body is above the limit of {limit} bytes")
        if not message.get("more_body", False):
            return bytes(parts)


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """`body` as a JSON object, or `{}` when empty; `what` names it in the error. At most MAX_VALUES values:
    the object is handed on whole, and moving (or making) millions of them would hold the event loop."""
    if not body.strip():
        return {}
    payload = loads(body, what=f"the body of {what}", max_values=MAX_VALUES)
    if not isinstance(payload, dict):
        raise InvalidInput(f"the body of {what} must be a JSON object")
    return payload


async def read_json_object(request: Request, limit: int, what: str) -> dict[str, Any]:
    """A body that is a JSON object, or empty (then `{}`); `what` names it in the error."""
    raw = await read_body(request, limit)
    return await offload_of(request.scope).run(len(raw), json_object, raw, what)


def _event_from_json(item: Any) -> NewEvent:
    if not isinstance(item, dict):
        raise InvalidInput('each event must be a JSON object {"event": "...", "data": ...}')
    unknown = set(item) - {"event", "data"}
    if unknown:
        raise InvalidInput(f"unknown event fields: {sorted(unknown)}")
    name = item.get("event", "message")
    if not isinstance(name, str):
        raise InvalidInput('"event" must be a string')
    return NewEvent.from_json(name, item.get("data"))


def json_events(body: bytes, max_batch: int, max_event_bytes: int) -> tuple[list[NewEvent], bool]:
    """The events of a JSON publish body, and whether it was an array (a batch) of at most `max_batch`.

    Each event's size is checked here too, so that a worker process sends no event back that is refused anyway.
    """
    payload = loads(body, max_items=max_batch, too_many=f"a batch holds at most {max_batch} events")
    batch = isinstance(payload, list)
    events = [_event_from_json(item) for item in payload] if batch else [_event_from_json(payload)]
    for event in events:
        if event.size > max_event_bytes:
            raise EventTooLarge(f"event of {event.size} bytes is above the limit of {max_event_bytes}")
    return events, batch


def text_event(name: str, body: bytes) -> NewEvent:
    """The event of a text/plain publish body: its UTF-8 text as the data."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise InvalidInput("a text/plain body must be UTF-8") from None
    return NewEvent(name, text)


def idempotency_key(request: Request) -> str | None:
    return checked_idempotency_key(request.headers.get("idempotency-key"))


def checked_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise InvalidInput("Idempotency-Key must be 1-200 printable characters")
    return key


# -- read from the ASGI scope (the hot publish route makes no Request) ----------------------------------------


def publish_headers(scope: Scope) -> tuple[str, str | None, str | None]:
    """The media type (lower case, no parameters; `text/plain` when absent), Content-Length and
    Idempotency-Key of a request, in one pass over its headers (the first of each, as Starlette reads them)."""
    media = length = key = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if media is None:
                media = value.decode("latin-1")
        elif name == b"content-length":
            if length is None:
                length = value.decode("latin-1")
        elif name == b"idempotency-key" and key is None:
            key = value.decode("latin-1")
    if media is None:
        return "text/plain", length, key
    return media.split(";")[0].strip().lower(), length, key


def query_value(scope: Scope, name: str, default: str) -> str:
    """One query parameter (its last value, as Starlette's `query_params` reads it), or `default`."""
    query: bytes = scope.get("query_string", b"")
    if not query:
        return default
    return dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)).get(name, default)
