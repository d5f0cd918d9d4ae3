"""HTTP responses: Server-Sent Event streams, and JSON answers and errors.

`EventSourceResponse` is the one SSE response of ssehub: the hub's subscriptions
use it, and so can any Starlette or FastAPI route that streams events of its own:

    async def numbers():                                # an async generator
        for i in range(10):
            yield ServerSentEvent(str(i), event="tick", id=str(i))
    return EventSourceResponse(numbers())

    async def handler(stream: EventStream) -> None:     # "write, write an event, on abort, close"
        await stream.send({"hello": "world"}, event="greeting")
    return EventSourceResponse(handler)

Items may be a `ServerSentEvent`, `bytes` (already-encoded SSE, written as they
are: the hub's frames), a `str` (the data as is) or anything else JSON-serialisable
(sent as JSON data). The first bytes are a `retry:` hint and a comment, so proxies
and browsers see the stream open at once. A stream ends when its source ends, when
sending fails, or when the client disconnects: a watcher waiting for
`http.disconnect` then cancels the writer, so the generator or handler is cancelled
(its `finally` / `except CancelledError` is the "on abort") and nothing keeps
running for a client that is gone. Nothing is stored: a reconnecting client gets
whatever the handler does for it (see `EventStream.last_event_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import warnings
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .. import sse

__all__ = [
    "DISCONNECT",
    "Answer",
    "SSE_HEADERS",
    "EventSourceResponse",
    "EventStream",
    "Handler",
    "error_response",
    "server_extension",
]

log = logging.getLogger("ssehub.asgi")

SSE_HEADERS: Mapping[str, str] = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    # nginx buffers proxied responses unless told not to; SSE must arrive as it is written.
    "x-accel-buffering": "no",
}
# Encoded once: thousands of open streams share the one list.
_RAW_SSE_HEADERS = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in SSE_HEADERS.items()]
_END = object()  # the producer's last word to the writer

#: The ASGI extension by which the server tells a stream, without a task of the stream's own, that its client
#: has gone (`ssehub serve`'s server provides it: `ssehub.connections`). `scope["extensions"][DISCONNECT]` is
#: a dict of the connection: a response sets its `"task"` there while it streams, and takes it out when it
#: ends; when the connection is lost, the server sets `"lost": True` and cancels that task. Its `"writer"`,
#: called in the response's task once the response has begun, gives a function that writes bytes of that
#: response's body at once, outside any task (as `send` would write them), and returns False, writing nothing,
#: when the socket cannot take them now (its buffer is full, or the client has gone): then `send` must.
DISCONNECT = "ssehub.disconnect"


def server_extension(scope: Scope) -> dict[object, object] | None:
    """The DISCONNECT extension of the request's connection, under a server that provides it (else None)."""
    extensions = scope.get("extensions")
    server: dict[object, object] | None = extensions.get(DISCONNECT) if extensions else None
    return server


#: An answer given whole, as `ssehub.connections.Shortcut` takes it: its status, its headers (Content-Length
#: among them) and its body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON error every endpoint answers: `{"error": {"code", "message"}}`."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _frame(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, sse.ServerSentEvent):
        return sse.encode(item.data, event=item.event, id=item.id or None, retry=item.retry)
    if isinstance(item, str):
        return sse.encode(item)
    return sse.encode(json.dumps(item, separators=(",", ":"), ensure_ascii=False))


class EventStream:
    """What a handler writes to. `send` waits while the client is slow (backpressure)."""

    def __init__(self, queue: asyncio.Queue[object], last_event_id: str | None) -> None:
        self._queue = queue
        #: The client's Last-Event-ID header when it reconnects, for handlers that can resume.
        self.last_event_id = last_event_id

    async def send(self, data: Any, *, event: str | None = None, id: str | int | None = None) -> None:
        """Send one event: `str` data as is, anything else as JSON."""
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        await self._queue.put(sse.encode(text, event=event, id=id))

    async def comment(self, text: str = "") -> None:
        await self._queue.put(sse.encode_comment(text))


Handler = Callable[[EventStream], Awaitable[None]]


class EventSourceResponse(Response):
    """Stream an async iterable of events, or run `handler(stream)`, as Server-Sent Events.

    `heartbeat` seconds of silence send a keep-alive comment. None sends none: the
    source then writes its own, as the hub's subscriptions do from one clock per hub,
    and is iterated in the response's own task (no second task per stream).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        source: AsyncIterable[Any] | Handler,
        *,
        heartbeat: float | None = 15.0,
        retry_ms: int | None = 2000,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        if heartbeat is not None and heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        # Response.__init__ is not called: it would render a body; a stream has none.
        self.source = source
        self.heartbeat = heartbeat
        self.retry_ms = retry_ms
        self.status_code = status_code
        self.background = None
        #: Body bytes written so far (for the access log).
        self.sent = 0
        self.raw_headers = _RAW_SSE_HEADERS
        if headers:
            self.raw_headers = [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in {**SSE_HEADERS, **headers}.items()
            ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # An idle stream is the common case, and thousands of them make every object per stream count. The
        # server of `ssehub serve` cancels the writer itself when the connection is lost (the extension
        # DISCONNECT); under any other server a plain asyncio watcher waits for `http.disconnect` and does.
        writer = asyncio.current_task()
        assert writer is not None
        server = server_extension(scope)
        watcher: asyncio.Future[None] | None = None
        if server is not None:
            server["task"] = writer
        else:
            watcher = asyncio.ensure_future(_watch_disconnect(receive, writer))
        try:
            # A copy: middleware such as CORS appends to the headers of the message it is given.
            await send({"type": "http.response.start", "status": self.status_code, "headers": list(self.raw_headers)})
            opening = sse.encode(comment="ok", retry=self.retry_ms)
            self.sent = len(opening)
            await send({"type": "http.response.body", "body": opening, "more_body": True})
            source = self.source
            # Without a heartbeat, the source is iterated in this task (no second task per stream) and with nothing
            # in between: the hub's chunks are bytes, which `_frame` passes on as they are.
            chunks: AsyncIterable[Any] = (
                source if self.heartbeat is None and isinstance(source, AsyncIterable) else self._produced(scope)
            )
            try:
                async for item in chunks:
                    chunk = _frame(item)
                    self.sent += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                # An async generator's `finally` must run now, in this task, not whenever it is collected.
                await _aclose(chunks)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            # The watcher, or the server, cancels the writer when the client leaves, and says so (the watcher by
            # finishing normally). Any other cancel (the server is stopping) is not ours to swallow.
            if server is not None:
                ours = server.get("lost", False)
            else:
                ours = watcher is not None and watcher.done() and not watcher.cancelled()
            if not ours or writer.uncancel() > 0:
                raise
        except OSError:  # the client went away while we were writing
            pass
        finally:
            if server is not None:
                server.pop("task", None)
            elif watcher is not None:
                watcher.cancel()

    async def _produced(self, scope: Scope) -> AsyncGenerator[bytes, None]:
        # A producer task runs the handler (or the iterable) at most one event ahead of the socket,
        # so the writer can wait for the next event and for the heartbeat at once.
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        producer = asyncio.ensure_future(self._produce(queue, Headers(scope=scope).get("last-event-id")))
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: wait_for may swallow a cancel (the client leaving)
                    # that arrives just as an item does.
                    async with asyncio.timeout(self.heartbeat):
                        item = await queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is _END:
                    return
                assert isinstance(item, bytes)
                yield item
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def _produce(self, queue: asyncio.Queue[object], last_event_id: str | None) -> None:
        source = self.source
        try:
            if isinstance(source, AsyncIterable):
                async for item in source:
                    await queue.put(_frame(item))
            else:
                await source(EventStream(queue, last_event_id))
        except Exception:
            # The response has started: the status can no longer say it, so end the stream.
            log.exception("event stream handler failed")
        finally:
            # Shielded: a cancelled producer must still let its generator clean up, then say it is done.
            await asyncio.shield(_aclose(source))
        await queue.put(_END)


async def _watch_disconnect(receive: Receive, writer: asyncio.Task[Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    writer.cancel()


async def _aclose(source: object) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


def _event_stream_response(
    content: AsyncIterable[bytes], *, retry_ms: int | None = 2000, headers: Mapping[str, str] | None = None
) -> EventSourceResponse:
    """`EventStreamResponse(chunks)` of ssehub 0.1: a stream of already-encoded SSE bytes, no heartbeat."""
    return EventSourceResponse(content, heartbeat=None, retry_ms=retry_ms, headers=headers)


def __getattr__(name: str) -> Any:
    if name == "EventStreamResponse":
        warnings.warn(
            "EventStreamResponse is deprecated: use EventSourceResponse(chunks, heartbeat=None)",
            DeprecationWarning,
            stacklevel=2,
        )
        return _event_stream_response
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
