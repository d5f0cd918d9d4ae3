"""What an append becomes in the topic log, and back.

An event's data is text, so the bytes of an append are stored as that text: UTF-8 for
`text/*` streams, one compact JSON text per message for `application/json` streams (JSON
mode keeps message boundaries, and each message is its own event with its own id), and
standard base64 for every other content type. This is also what the SSE dialect carries,
so a read is a join of stored texts and never a re-encoding.

A topic written through ssehub's own interface is an `application/json` stream whose
messages are its events: an event named `message` is its data, any other event is
`{"event": name, "data": data}` (data as JSON when it parses as JSON, else as a string).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable

from ..events import Event
from ..exceptions import InvalidInput
from ..parsing import loads

__all__ = [
    "JSON",
    "decode",
    "encode_bytes",
    "is_binary",
    "is_json",
    "join",
    "json_messages",
]

JSON = "application/json"


def is_json(media: str) -> bool:
    return media == JSON


def is_binary(media: str) -> bool:
    """Whether the protocol base64-encodes this type in SSE (and ssehub stores it as base64)."""
    return not (media.startswith("text/") or media == JSON)


def json_messages(body: bytes, *, allow_empty: bool, max_items: int | None = None) -> list[str]:
    """The messages of a JSON-mode body, as compact JSON texts: a top-level array is flattened
    one level (`[a, b]` is two messages, `[[1, 2]]` one), any other value is one message.
    An empty array is an error on append (`allow_empty=False`) and no messages on create.
    An array of more than `max_items` messages is refused before the rest of it is parsed."""
    too_many = f"an append holds at most {max_items} JSON messages"
    value = loads(body, max_items=max_items, too_many=too_many, constants=False)
    items = value if isinstance(value, list) else [value]
    if not items and not allow_empty:
        raise InvalidInput("an empty JSON array appends nothing: send at least one message")
    return [json.dumps(v, separators=(",", ":"), ensure_ascii=False) for v in items]


def encode_bytes(media: str, body: bytes) -> str:
    """One non-JSON append as event data."""
    if is_binary(media):
        return base64.b64encode(body).decode("ascii")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"a {media} stream takes UTF-8 text; use a binary content type for other bytes") from None


def _message(event: Event) -> str:
    """An event as one JSON message (see the module docstring)."""
    try:
        json.loads(event.data)
        data = event.data
    except ValueError:
        data = json.dumps(event.data, ensure_ascii=False)
    if event.event == "message":
        return data
    return f'{{"event":{json.dumps(event.event)},"data":{data}}}'


def decode(media: str, event: Event) -> bytes:
    """The bytes one stored event contributes to a non-JSON read."""
    if is_binary(media):
        try:
            return binascii.a2b_base64(event.data, strict_mode=True)
        except (binascii.Error, ValueError):
            # Published through ssehub's own interface as text, not by a Durable Streams append.
            return event.data.encode("utf-8")
    return event.data.encode("utf-8")


def join(media: str, events: Iterable[Event]) -> bytes:
    """A read's body: the events' bytes one after the other, or, in JSON mode, one array."""
    if is_json(media):
        return ("[" + ",".join(_message(e) for e in events) + "]").encode("utf-8")
    return b"".join(decode(media, e) for e in events)
