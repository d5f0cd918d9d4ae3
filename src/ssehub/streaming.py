"""Ad-hoc SSE responses for handlers that need no durable topic.

Two styles, one response class, for Starlette and FastAPI alike:

    async def numbers():                                # an async generator
        for i in range(10):
            yield ServerSentEvent(str(i), event="tick", id=str(i))
    return EventSourceResponse(numbers())

    async def handler(stream: EventStream) -> None:     # "write, write an event, on abort, close"
        await stream.send({"hello": "world"}, event="greeting")
    return EventSourceResponse(handler)

Items may be a `ServerSentEvent`, a `str` (the data as is) or anything else
JSON-serialisable (sent as JSON data). The headers, the opening `retry:` hint,
the heartbeat comments and the disconnect handling are those of the hub's own
streams: when the client goes away, the generator or handler is cancelled
(its `finally` / `except CancelledError` is the "on abort"), and nothing keeps
running for a client that is gone. Nothing here is stored: a reconnecting
client gets whatever the handler does for it (see `EventStream.last_event_id`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any

import anyio
from anyio.abc import ObjectSendStream
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import sse
from .responses import SSE_HEADERS

__all__ = ["EventSourceResponse", "EventStream", "Handler"]

log = logging.getLogger("ssehub.streaming")


def _frame(item: Any) -> bytes:
    if isinstance(item, sse.ServerSentEvent):
        return sse.encode(item.data, event=item.event, id=item.id or None, retry=item.retry)
    if isinstance(item, str):
        return sse.encode(item)
    return sse.encode(json.dumps(item, separators=(",", ":"), ensure_ascii=False))


class EventStream:
    """What a handler writes to. `send` waits while the client is slow (backpressure)."""

    def __init__(self, channel: ObjectSendStream[bytes], last_event_id: str | None) -> None:
        self._channel = channel
        #: The client's Last-Event-ID header when it reconnects, for handlers that can resume.
        self.last_event_id = last_event_id

    async def send(self, data: Any, *, event: str | None = None, id: str | int | None = None) -> None:
        """Send one event: `str` data as is, anything else as JSON."""
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        await self._channel.send(sse.encode(text, event=event, id=id))

    async def comment(self, text: str = "") -> None:
        await self._channel.send(sse.encode_comment(text))


Handler = Callable[[EventStream], Awaitable[None]]


class EventSourceResponse(Response):
    """Stream an async iterable of events, or run `handler(stream)`, as Server-Sent Events."""

    media_type = "text/event-stream"

    def __init__(
        self,
        source: AsyncIterable[Any] | Handler,
        *,
        heartbeat: float = 15.0,
        retry_ms: int | None = 2000,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        self.source = source
        self.heartbeat = heartbeat
        self.retry_ms = retry_ms
        self.status_code = status_code
        self.background = None
        self.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in {**SSE_HEADERS, **(headers or {})}.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        last_event_id = Headers(scope=scope).get("last-event-id")
        # No buffer: the producer runs at most one event ahead of the socket.
        sender, receiver = anyio.create_memory_object_stream[bytes](0)
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()  # the client is gone: cancel the producer ("on abort")

            async def produce() -> None:
                async with sender:
                    try:
                        if callable(self.source) and not isinstance(self.source, AsyncIterable):
                            await self.source(EventStream(sender, last_event_id))
                        else:
                            async for item in self.source:
                                await sender.send(_frame(item))
                    except Exception:
                        # The response has started: the status can no longer say it, so end the stream.
                        log.exception("event stream handler failed")
                    finally:
                        aclose = getattr(self.source, "aclose", None)
                        if aclose is not None:
                            with anyio.CancelScope(shield=True):
                                await aclose()

            tg.start_soon(watch_disconnect)
            tg.start_soon(produce)
            try:
                await self._write(send, receiver)
            except OSError:  # the client went away while we were writing
                pass
            tg.cancel_scope.cancel()

    async def _write(self, send: Send, receiver: anyio.abc.ObjectReceiveStream[bytes]) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send(
            {"type": "http.response.body", "body": sse.encode(comment="ok", retry=self.retry_ms), "more_body": True}
        )
        async with receiver:
            while True:
                chunk = b""
                with anyio.move_on_after(self.heartbeat):
                    try:
                        chunk = await receiver.receive()
                    except anyio.EndOfStream:
                        break
                await send({"type": "http.response.body", "body": chunk or b": keep-alive\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
