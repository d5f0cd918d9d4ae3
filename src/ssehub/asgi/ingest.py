"""Streaming ingest: one long POST whose body is NDJSON, each line an event appended as it arrives.

    POST /topics/{topic}/events
    Content-Type: application/x-ndjson
    Transfer-Encoding: chunked

    {"event": "token", "data": "Hel"}
    {"event": "token", "data": "lo"}
    ...

A producer that streams (an agent sending tokens) keeps one request open instead of paying a
request per event. Each line is validated as the JSON route validates an event (`{"event",
"data"}`, `event` optional); the complete lines of what arrives in one read are appended as one
batch (at most `max_batch` events), so readers see them while the POST is still open. The answer
at the end reports what was appended: `{"first_id", "last_id", "count", "lines", "ranges"}`. Other
publishers may append to the topic meanwhile, so the ids are the range, not a promise that every
id in it is this stream's.

A stream stops at the first line it cannot take and answers its error with the line number
(`{"error": {"code", "message", "line"}, ...}`) and what was appended before it, which stays:

- 400 a line that is not a JSON object of the right shape, or not UTF-8;
- 413 a line above `max_event_bytes`, or the body above `max_stream_bytes` (the lines before the cap are kept);
- 408 nothing arrived for `stream_idle_timeout` seconds;
- 503 the server began draining (a new stream gets 503 at once): retry elsewhere with the same key.

**Retries.** With an `Idempotency-Key: K`, the batch whose first line is line n is appended with
the key `K:n`. A retried stream sends the same lines again from line 1; each batch's key then
finds what the first attempt stored and answers its ids without writing. The retry need not arrive
in the same pieces: a stored batch covers the lines it covered, so its key tells how many lines to
skip, and the next lookup starts exactly where the first attempt's next batch started. A key's
fingerprint is that of its first line, which every attempt shares (a changed line there is a 422).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..access import PUBLISH
from ..events import NewEvent, validate_topic
from ..exceptions import EventTooLarge, InvalidInput, SSEHubError
from ..hub import Hub
from ..parsing import loads
from ..stores import payload_fingerprint
from .auth import Access
from .requests import Offload, _event_from_json, idempotency_key, offload_of

__all__ = ["NDJSON", "STREAM_MEDIA", "StreamIngest"]

log = logging.getLogger("ssehub.asgi")

NDJSON = "application/x-ndjson"
#: The media types of a streamed publish.
STREAM_MEDIA = (NDJSON, "application/jsonl", "application/ndjson")
# How often a waiting stream looks at the hub's draining flag and its idle clock.
_TICK = 1.0
# A JSON line may be up to 6 times its event (every byte of data escaped as \u00XX), plus its keys.
_LINE_FACTOR, _LINE_SLACK = 6, 4096


class _Stop(Exception):
    """Ends a stream early: the error to answer, and the line it is about (0: none)."""

    def __init__(self, error: SSEHubError, line: int = 0) -> None:
        super().__init__(error.message)
        self.error = error
        self.line = line


@dataclass
class _Report:
    """What a stream appended so far: the id range, how many events, how many lines it read.

    `ranges` lists every id, in line order, as `[first, last]` runs: other publishers to the topic
    may append between a stream's batches, so `first_id..last_id` alone may hold ids not its own.
    """

    first_id: int | None = None
    last_id: int | None = None
    count: int = 0
    lines: int = 0
    ranges: list[list[int]] = field(default_factory=list)
    #: Ids a stored batch holds beyond the lines read so far (a retry sent in smaller pieces).
    ahead: list[int] = field(default_factory=list)

    def add(self, ids: list[int]) -> None:
        if not ids:
            return
        low, high = min(ids), max(ids)
        self.first_id = low if self.first_id is None else min(self.first_id, low)
        self.last_id = high if self.last_id is None else max(self.last_id, high)
        self.count += len(ids)
        for id in ids:
            if self.ranges and self.ranges[-1][1] + 1 == id:
                self.ranges[-1][1] = id
            else:
                self.ranges.append([id, id])

    def as_dict(self) -> dict[str, Any]:
        return {
            "first_id": self.first_id,
            "last_id": self.last_id,
            "count": self.count,
            "lines": self.lines,
            "ranges": self.ranges,
        }


class StreamIngest:
    """The NDJSON publish of one hub; `TopicEndpoints.publish` hands it the streams."""

    def __init__(self, hub: Hub, access: Access) -> None:
        self.hub = hub
        self.access = access

    async def publish(self, request: Request, topic: str) -> Response:
        self.access.require(request, PUBLISH, validate_topic(topic))
        key = idempotency_key(request)
        if self.hub.draining:
            return _draining_error()
        report = _Report()
        try:
            await self._read(request, topic, key, report)
        except _Stop as stop:
            return self._error(stop, report, topic)
        return JSONResponse(report.as_dict())

    def _error(self, stop: _Stop, report: _Report, topic: str) -> Response:
        error = stop.error
        detail: dict[str, Any] = {"code": error.code, "message": error.message}
        if stop.line:
            detail["message"] = f"line {stop.line}: {error.message}"
            detail["line"] = stop.line
        if error.status >= 500 or stop.line == 0:
            log.info("stream to %r ended: %s (%d events appended)", topic, error.message, report.count)
        # "Not now": a client may send the stream again (with its key) a second later.
        headers = {"retry-after": "1"} if error.status in (429, 503) else None
        # The connection is closed after this answer: the rest of the body is not read.
        return JSONResponse({"error": detail, **report.as_dict()}, status_code=error.status, headers=headers)

    async def _read(self, request: Request, topic: str, key: str | None, report: _Report) -> None:
        config = self.hub.config
        cap, idle = config.max_stream_bytes, config.stream_idle_timeout
        line_limit = config.max_event_bytes * _LINE_FACTOR + _LINE_SLACK
        receive = request.receive
        parser = offload_of(request.scope)  # a line of megabytes is parsed off the event loop
        loop = asyncio.get_running_loop()
        # The unfinished last line, in the pieces it came in: joined once, when its end arrives.
        pending: list[bytes] = []
        pending_size = 0
        received = 0
        heard = loop.time()  # when the last line ended (or the stream began): the idle clock
        more = True
        while more:
            try:
                async with asyncio.timeout(min(_TICK, idle)):
                    message = await receive()
            except TimeoutError:
                if self.hub.draining:
                    raise _Stop(_DrainingError("the server is shutting down: resend the stream elsewhere")) from None
                if loop.time() - heard >= idle:
                    raise _Stop(_IdleTimeout(f"no line ended for {idle:g} seconds"), report.lines + 1) from None
                continue
            if message["type"] == "http.disconnect":
                log.info("stream to %r: the client left after %d events", topic, report.count)
                raise _Stop(InvalidInput("the client disconnected"))
            body: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            over = received + len(body) > cap
            if over:
                body = body[: cap - received]
            received += len(body)
            cut = body.rfind(b"\n")
            if cut < 0:
                pending.append(body)
                pending_size += len(body)
            else:
                head = b"".join((*pending, body[:cut])) if pending else body[:cut]
                rest = body[cut + 1 :]
                pending, pending_size = ([rest], len(rest)) if rest else ([], 0)
                heard = loop.time()
                await self._append(parser, topic, key, head.split(b"\n"), report)
            if over:
                raise _Stop(
                    EventTooLarge(f"the stream is above the limit of {cap} bytes (see --max-stream-bytes)"),
                    report.lines + 1,
                )
            if pending_size > line_limit:
                raise _Stop(EventTooLarge(f"a line above {line_limit} bytes"), report.lines + 1)
            if self.hub.draining and more:
                raise _Stop(_DrainingError("the server is shutting down: resend the stream elsewhere"))
        if pending_size:
            await self._append(parser, topic, key, [b"".join(pending)], report)

    async def _append(self, parser: Offload, topic: str, key: str | None, lines: list[bytes], report: _Report) -> None:
        """Validate and append `lines` (the next ones of the stream), in batches; _Stop at a bad one."""
        numbers: list[int] = []  # the line number of each event
        events: list[NewEvent] = []
        bad: _Stop | None = None
        limit = self.hub.config.max_event_bytes
        for raw in lines:
            number = report.lines + 1
            if not raw.strip():
                report.lines = number
                continue
            if report.ahead:
                # A retry sent in smaller pieces than the first attempt's batches: this line is stored.
                report.add([report.ahead.pop(0)])
                report.lines = number
                continue
            try:
                event = await parser.run(len(raw), _parse_line, raw)
                if event.size > limit:
                    raise EventTooLarge(f"an event of {event.size} bytes is above the limit of {limit}")
            except SSEHubError as exc:
                bad = _Stop(exc, number)
                break
            report.lines = number
            numbers.append(number)
            events.append(event)
        # On a retry, a stored batch may cover more or fewer events than this attempt's: each step
        # takes what its key stored and starts the next batch right after it, where the first attempt did.
        maximum = self.hub.config.max_batch
        i = 0
        while i < len(events):
            batch = events[i : i + maximum]
            first = numbers[i]
            try:
                if key is None:
                    ids = await self.hub.publish_many(topic, batch)
                else:
                    ids = await self.hub.publish_many(
                        topic,
                        batch,
                        idempotency_key=f"{key}:{first}",
                        fingerprint="ndjson:" + payload_fingerprint(batch[:1]),
                    )
            except SSEHubError as exc:
                report.lines = first - 1
                raise _Stop(exc, first) from None
            taken = min(len(ids), len(batch))
            report.add(ids[:taken])
            report.ahead.extend(ids[taken:])
            i += taken or len(batch)
        if bad is not None:
            raise bad


def _parse_line(raw: bytes) -> NewEvent:
    # Within ssehub.parsing's bounds: UTF-8, nested at most 100 deep, no lone surrogate.
    return _event_from_json(loads(raw, what="the line"))


class _DrainingError(SSEHubError):
    """The server is shutting down; send the stream to another node (with the same Idempotency-Key)."""

    status = 503
    code = "draining"


class _IdleTimeout(InvalidInput):
    """Nothing arrived on the stream for too long."""

    status = 408
    code = "stream_idle_timeout"


def _draining_error() -> Response:
    return JSONResponse(
        {"error": {"code": _DrainingError.code, "message": "the server is shutting down: send the stream elsewhere"}},
        status_code=503,
        headers={"retry-after": "1"},
    )
