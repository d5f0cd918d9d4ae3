"""ASGI responses that stream Server-Sent Events.

A stream ends when its content ends, when the client disconnects (we listen
for `http.disconnect` in a sibling task and cancel the writer, so nothing
keeps running for a client that is gone), or when sending fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import sse

__all__ = ["SSE_HEADERS", "EventStreamResponse"]

SSE_HEADERS: Mapping[str, str] = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    # nginx buffers proxied responses unless told not to; SSE must arrive as it is written.
    "x-accel-buffering": "no",
}
# Encoded once: thousands of open streams share the one list.
_RAW_SSE_HEADERS = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in SSE_HEADERS.items()]


class EventStreamResponse(Response):
    """Streams `content` (already SSE-encoded chunks) with the SSE headers.

    The first bytes are a `retry:` hint and a comment, so proxies and browsers
    see the stream open at once rather than when the first event arrives.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterable[bytes],
        *,
        retry_ms: int | None = 2000,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.content = content
        self.retry_ms = retry_ms
        self.status_code = 200
        self.background = None
        self.raw_headers = _RAW_SSE_HEADERS
        if headers:
            self.raw_headers = [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in {**SSE_HEADERS, **headers}.items()
            ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A plain asyncio watcher rather than a task group: an idle stream is the common case, and
        # thousands of them make every object per stream count. The watcher cancels the writer when
        # the client disconnects and then finishes normally, which tells that cancel from any other.
        writer = asyncio.current_task()
        assert writer is not None
        watcher = asyncio.ensure_future(self._watch_disconnect(receive, writer))
        try:
            await self._stream(send)
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled():
                raise  # cancelled from outside (the server is stopping): not ours to swallow
            writer.uncancel()
        except OSError:  # the client went away while we were writing
            pass
        finally:
            watcher.cancel()

    @staticmethod
    async def _watch_disconnect(receive: Receive, writer: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        writer.cancel()

    async def _stream(self, send: Send) -> None:
        # A copy: middleware such as CORS appends to the headers of the message it is given.
        start = {"type": "http.response.start", "status": self.status_code, "headers": list(self.raw_headers)}
        await send(start)
        await send(
            {"type": "http.response.body", "body": sse.encode(comment="ok", retry=self.retry_ms), "more_body": True}
        )
        try:
            async for chunk in self.content:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            # An async generator's `finally` must run now, in this task, not whenever it is collected.
            aclose = getattr(self.content, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
