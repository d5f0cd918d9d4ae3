"""Reading what a request asks for: cursors, limits, bodies, events, idempotency keys.

Each function either returns a valid value or raises an `InvalidInput` that the
error handling turns into a precise 4xx; nothing here writes anything.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from ..events import NewEvent
from ..exceptions import EventTooLarge, InvalidCursor, InvalidInput, UnsupportedMediaType
from ..formats import FORMATS, Cursor

__all__ = [
    "checked_idempotency_key",
    "idempotency_key",
    "json_events",
    "mount_prefix",
    "parse_cursor",
    "parse_events",
    "parse_limit",
    "publish_headers",
    "query_value",
    "read_body",
    "read_json_object",
    "receive_body",
    "text_event",
    "request_cursor",
    "request_format",
    "request_position",
]


def parse_cursor(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise InvalidCursor(f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


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
    if not value.isascii() or not value.isdigit() or not 1 <= int(value[:6]) <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}, got {value[:40]!r}")
    return int(value)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise EventTooLarge(f"request body of {declared} bytes is above the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise EventTooLarge(f"request body is above the limit of {limit} bytes")
    return bytes(body)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput("the body is not valid JSON") from None


async def read_json_object(request: Request, limit: int, what: str) -> dict[str, Any]:
    """A body that is a JSON object, or empty (then `{}`); `what` names it in the error."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    payload = _json(raw)
    if not isinstance(payload, dict):
        raise InvalidInput(f"the body of {what} must be a JSON object")
    return payload


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


async def parse_events(request: Request, max_request_bytes: int, max_event_bytes: int) -> tuple[list[NewEvent], bool]:
    """The events of a publish request, and whether it was a JSON array (a batch)."""
    media = request.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
    if media == "application/json":
        payload = _json(await read_body(request, max_request_bytes))
        if isinstance(payload, list):
            return [_event_from_json(item) for item in payload], True
        return [_event_from_json(payload)], False
    if media in ("text/plain", ""):
        body = await read_body(request, max_event_bytes)
        return [text_event(request.query_params.get("event", "message"), body)], False
    raise UnsupportedMediaType(f"publish with Content-Type application/json or text/plain, not {media!r}")


def idempotency_key(request: Request) -> str | None:
    return checked_idempotency_key(request.headers.get("idempotency-key"))


def checked_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise InvalidInput("Idempotency-Key must be 1-200 printable characters")
    return key


# -- the same, read from the ASGI scope and `receive` (the hot publish route makes no Request) -----------------


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


async def receive_body(receive: Receive, limit: int, declared: str | None) -> bytes:
    """`read_body` from `receive`: the body, refusing more than `limit` bytes without reading them all."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise EventTooLarge(f"request body of {declared} bytes is above the limit of {limit}")
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
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


def json_events(body: bytes) -> list[NewEvent]:
    """The events of a JSON publish body: one event object, or an array of them (a batch)."""
    payload = _json(body)
    if isinstance(payload, list):
        return [_event_from_json(item) for item in payload]
    return [_event_from_json(payload)]


def text_event(name: str, body: bytes) -> NewEvent:
    """The event of a text/plain publish body: its UTF-8 text as the data."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise InvalidInput("a text/plain body must be UTF-8") from None
    return NewEvent(name, text)
