"""The access log: one line per request, written when the response has ended (logger `ssehub.access`).

    access method=GET path=/topics/t/events status=200 bytes=5210 seconds=8.214 client=127.0.0.1
           topic=t after=0 events=12 ended=closed subject=key:ops

A stream's line says where it started (`after`: the cursor it began at), how many events it sent, and
why it ended: `closed` (the topic ended and was read to
its end), `deleted`, `draining` (the server is stopping: the client reconnects and resumes),
`store_unavailable`, `auth_expired` (the subscriber's token expired), or `client` (the client went away).

Hooks, for the layers that know more than this one:

- `scope["ssehub.stream"]`: the `Subscription` a response streams (set by `SubscriptionResponse`).
- `scope["ssehub.subject"]`: who made the request, as a short string (`key:<API key name>`,
  `token:<subject>`), set by whatever checks credentials; written as the line's `subject`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..hub import Subscription
from ..logs import log_mapping

__all__ = ["STREAM_KEY", "SUBJECT_KEY", "log_access", "log_request"]

log = logging.getLogger("ssehub.access")

STREAM_KEY = "ssehub.stream"
SUBJECT_KEY = "ssehub.subject"


async def log_access(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app` for one HTTP request and write its access line once the response has ended."""
    started = time.perf_counter()
    status = 0
    sent = 0

    async def counting_send(message: Message) -> None:
        nonlocal status, sent
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            sent += len(message.get("body", b""))
        await send(message)

    try:
        await app(scope, receive, counting_send)
    finally:
        log_request(scope, status, sent, started)


def log_request(scope: Scope, status: int, sent: int, started: float) -> None:
    """Write the access line of a request that answered `status` with `sent` body bytes, begun at `started`
    (`time.perf_counter()`); for the app's own handlers, which know both without wrapping `send`. A stream's
    bytes written from the tail's wake, not through `send` (`Subscription.direct_bytes`), are added here."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "method": scope["method"],
        "path": scope["path"],
        "status": status or 500,
        "bytes": sent,
        "seconds": time.perf_counter() - started,
    }
    client = scope.get("client")
    if client and client[0]:
        fields["client"] = client[0]
    subject = scope.get(SUBJECT_KEY)
    if subject is not None:
        fields["subject"] = subject
    stream = scope.get(STREAM_KEY)
    if isinstance(stream, Subscription):
        fields["bytes"] += stream.direct_bytes
        fields.update(topic=stream.tail.name, after=stream.after, events=stream.events_sent)
        fields["ended"] = stream.ended or "client"
    log_mapping(log, "access", fields)
