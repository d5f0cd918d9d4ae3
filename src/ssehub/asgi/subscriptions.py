"""The response that streams a topic to one subscriber: topics and runs alike, in any wire format.

The native format without compaction takes the hub's fast path (`Subscription.chunks()`: the
tail's cached frames, nothing parsed). Every other reading (`ai-sdk`, `ag-ui`, or native with
``?compact=1``) is a `Reading`, which runs the subscriber loop of `ssehub.formats` over
`Subscription.events()`: an encoder per response, fed from the log's first event when the
format is stateful, so that `Last-Event-ID` resumes at any frame.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .. import formats, sse
from ..config import HubConfig
from ..exceptions import SSEHubError
from ..formats import Cursor, Encoder
from ..hub import Gap, Hub, Subscription
from ..runs import RUN_PREFIX
from .access import STREAM_KEY
from .errors import response_for
from .responses import EventSourceResponse, server_extension

__all__ = ["AG_UI_META", "Reading", "SubscriptionResponse", "reading_for"]

#: The key of a run's metadata that holds the ids its AG-UI readers see: {"thread_id", "run_id"}.
#: A run started with AG-UI's RunAgentInput keeps the client's own; any other run shows its own id.
AG_UI_META = "ag_ui"

_KEEP_ALIVE = b": keep-alive\n\n"


class _CutStreams(logging.Filter):
    """Drops the server's complaint about a response that ended unfinished, once for each stream the hub cut.

    A cut stream cannot be finished (its socket takes nothing more), so its response returns unfinished
    on purpose, and uvicorn, which then closes the connection, logs an error. The hub has logged the cut.
    """

    MESSAGE = "ASGI callable returned without completing response."

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pending and record.msg == self.MESSAGE:
            self.pending -= 1
            return False
        return True


_CUT_STREAMS = _CutStreams()


@dataclass(frozen=True, slots=True)
class Reading:
    """How one subscriber reads a topic in a wire format (see `ssehub.formats`)."""

    format: str
    #: Where it resumes; None: at the live end, with the opening frames of what is in progress.
    cursor: Cursor | None
    #: Merge the deltas of what is read in pages; None: the format's default.
    compact: bool | None = None
    #: What is being read: the AI SDK message id, the AG-UI run id; `thread_id` is the AG-UI thread.
    run_id: str = ""
    thread_id: str | None = None

    def encoder(self, after: Cursor) -> Encoder:
        return formats.create(self.format, run_id=self.run_id, thread_id=self.thread_id, after=after)


def reading_for(
    topic: str, format: str, compact: bool | None, cursor: Cursor | None, meta: Mapping[str, Any]
) -> Reading:
    """The reading of `topic` (with its metadata `meta`) in `format`: a run shows its run id, a topic its name."""
    run_id, thread_id = topic.removeprefix(RUN_PREFIX), None
    ids = meta.get(AG_UI_META)
    if format == "ag-ui" and isinstance(ids, dict):
        run_id, thread_id = str(ids.get("run_id") or run_id), ids.get("thread_id")
    return Reading(format, cursor, compact, run_id, thread_id)


class SubscriptionResponse(Response):
    """Holds a subscription for exactly as long as its response streams.

    A reconnect at the end of a topic that has ended answers `204 No Content`,
    which tells EventSource to stop reconnecting: there is nothing more, ever.
    With `until`, the stream ends with `event: auth_expired` when the credentials expire.
    """

    def __init__(
        self,
        hub: Hub,
        topic: str,
        after: int | None,
        headers: Mapping[str, str] | None = None,
        *,
        reading: Reading | None = None,
        until: float | None = None,
    ) -> None:
        # Response.__init__ is not called: the status and body are decided once the subscription is held.
        self.hub, self.topic, self.after, self.headers_given = hub, topic, after, headers
        self.reading = reading
        #: When the subscriber's credentials expire (seconds since the epoch): the stream ends then.
        self.until = until
        self.status_code = 200
        self.background = None
        #: What it answered, once it has (0: nothing yet), and the body bytes it wrote through `send`: for the
        #: access log (which adds a stream's bytes written from the tail's wake).
        self.answered = 0
        self.sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.hub.config
        sub: Subscription | None = None
        stream: EventSourceResponse | None = None
        try:
            async with self.hub.subscription(self.topic, self.after) as sub:
                scope[STREAM_KEY] = sub  # for the access log
                sub.task = asyncio.current_task()  # the hub cuts this task's stream if its socket stops draining
                if self.reading is None:
                    # A 204 is for good (EventSource stops): check the store first when another process shares it.
                    if sub.finished and await sub.sync(sub.cursor) and sub.finished:
                        await self._answer(Response(status_code=204, headers=self.headers_given), scope, receive, send)
                        return
                    # No heartbeat of the response's own: the hub sends keep-alives from one clock for every stream.
                    stream = EventSourceResponse(
                        sub.chunks(self.until), heartbeat=None, retry_ms=config.retry_ms, headers=self.headers_given
                    )
                    self.answered = 200
                    # Under `ssehub serve`, new events are written from the tail's wake (`Subscription.take`);
                    # `chunks()` only offers them there once the stream has begun.
                    server = server_extension(scope)
                    writer = server.get("writer") if server else None
                    if callable(writer):
                        sub.direct = writer()
                    await stream(scope, receive, send)
                    return
                # Whether the reader gets anything is known once its encoder has caught up with the log: the
                # frames are read up to the first output (or the live end) before the status is chosen.
                async with contextlib.aclosing(_frames(sub, self.reading, config, self.until)) as frames:
                    first = await anext(frames, None)
                    if first is None:
                        await self._answer(Response(status_code=204, headers=self.headers_given), scope, receive, send)
                        return
                    headers = {**(self.headers_given or {}), **self.reading.encoder(Cursor()).headers}
                    stream = EventSourceResponse(
                        _starting_with(first, frames), heartbeat=None, retry_ms=config.retry_ms, headers=headers
                    )
                    self.answered = 200
                    await stream(scope, receive, send)
        except asyncio.CancelledError:
            if sub is None or not sub.stalled():
                raise
            # The hub cut a stream whose socket stopped draining (`Subscription.cut`). Nothing more can be
            # written to it, not even a retry hint: the response ends unfinished, so the server closes the
            # connection, and the client reconnects (after the `retry:` of the stream's opening) and resumes.
            server_log = logging.getLogger("uvicorn.error")
            if _CUT_STREAMS not in server_log.filters:
                server_log.addFilter(_CUT_STREAMS)
            _CUT_STREAMS.pending += 1
        except SSEHubError as exc:
            if self.answered:
                raise  # the answer has begun: too late for an error status
            # E.g. the store is unreachable: nothing has been sent yet, so say so, as any other endpoint would.
            await self._answer(response_for(exc, scope["method"], scope["path"]), scope, receive, send)
        finally:
            if stream is not None:
                self.sent = stream.sent

    async def _answer(self, response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        self.answered, self.sent = response.status_code, len(response.body)
        await response(scope, receive, send)


async def _starting_with(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def _frames(
    sub: Subscription, reading: Reading, config: HubConfig, until: float | None = None
) -> AsyncGenerator[bytes, None]:
    """The subscriber loop of `ssehub.formats` (its package docstring), over `Subscription.events()`.

    Yields the bytes to write, and once, when it reaches the live end before it has anything
    to send, an empty chunk: the response can begin. Yields nothing at all for a reader that
    is at the end of a topic that has ended (a 204). At `until` (the reader's credentials
    expire) it ends: with `event: auth_expired` in the native format, with a retry hint in
    the others, whose parsers know no such event (their client reconnects, and gets a 401).
    """
    tail, cursor = sub.tail, reading.cursor
    if not await sub.sync(0 if cursor is None else cursor.after):
        yield sse.encode_retry(config.retry_hint())
        return
    last = tail.last_id
    out = b""
    join_at: int | None = None  # a reader with no cursor joins at the live end: the opening frames, then the rest
    if cursor is None:
        encoder, join_at = reading.encoder(Cursor(last)), last
        start = 0 if encoder.stateful else last
    elif cursor.after > last:
        # Beyond the end (the topic was deleted and made anew, or never existed): start over, said aloud.
        encoder = reading.encoder(Cursor())
        out = encoder.reset(tail.first_id if last else 1, cursor.after)
        start = encoder.last_id
    else:
        encoder = reading.encoder(cursor)
        start = 0 if encoder.stateful else cursor.after
    sub.cursor = start
    compact, started = reading.compact, False
    loop = asyncio.get_running_loop()
    sent = loop.time()
    async with contextlib.aclosing(sub.events(until)) as items:
        async for item in items:
            idle = False
            if isinstance(item, Gap):
                out += encoder.reset(item.first_id, item.after)
            elif item:
                if join_at is not None:
                    head = bisect.bisect_right(item, join_at, key=attrgetter("id"))
                    out += encoder.encode(item[:head], compact=compact)
                    if head < len(item) or encoder.last_id >= join_at:
                        out, join_at = out + encoder.join(), None
                    item = item[head:]
                out += encoder.encode(item, compact=compact)
            else:
                idle = True
                if join_at is not None:
                    out, join_at = out + encoder.join(), None
            if encoder.ended:
                break
            if out:
                yield out
                out, sent, started = b"", loop.time(), True
            elif idle and not started:
                started = True
                yield b""
            elif idle and loop.time() - sent >= config.quiet:
                sent = loop.time()
                yield _KEEP_ALIVE
    if sub.ended == "auth_expired":
        # Not jittered: a token expires for one client, not for all of them at once.
        out += sub.expired() if reading.format == "native" else sse.encode_retry(config.retry_ms)
    elif not encoder.ended and not tail.deleted:
        if not sub.finished:
            out += sse.encode_retry(config.retry_hint())  # drained, or the store is away: reconnect and resume
        elif join_at is None:
            out += encoder.close(tail.status)
    if out:
        yield out
