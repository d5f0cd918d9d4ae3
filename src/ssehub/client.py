"""A resumable consumer and a safe publisher for an ssehub server, on httpx.

    async with AsyncClient("http://127.0.0.1:8000") as client:
        await client.publish("build-42", "log", {"line": "compiling"})
        async for event in client.subscribe("build-42", after=0):
            print(event.id, event.event, event.json())

`subscribe` keeps a cursor (the last id it yielded) and reconnects by itself with
``Last-Event-ID`` until the topic ends, so the caller sees every event exactly once and in
order. Every publish carries an ``Idempotency-Key``, so retrying it after a timeout can
never append the same event twice.

`Client` offers the same methods to synchronous code (scripts, notebooks, the CLI).

A token may be a string, or a function (plain or async) that returns a fresh one: the client
calls it when it first needs a token, again when the hub answers 401, and when a stream ends
with ``event: auth_expired`` (the token expired mid-stream), then resumes from its last id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import json
import os
import random
import re
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ._version import __version__
from .config import DEFAULT_URL
from .events import Event, NewEvent, TopicInfo, validate_topic
from .exceptions import (
    EventTooLarge,
    Forbidden,
    InvalidCursor,
    InvalidInput,
    InvalidTopic,
    ServerError,
    SSEHubError,
    StoreUnavailable,
    TokenExpired,
    TooManyRequests,
    TopicClosed,
    TopicNotFound,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
)
from .sse import Decoder, ServerSentEvent

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "Client",
    "StreamResult",
    "SyncTopicStream",
    "TokenSource",
    "TopicState",
    "TopicStream",
]

T = TypeVar("T")

#: A function that returns a fresh token (or a coroutine that does).
TokenSource = Callable[[], "str | Awaitable[str]"]

# Answers that say "not now" rather than "never": worth another try.
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})

_BY_CODE: dict[str, type[SSEHubError]] = {
    cls.code: cls
    for cls in (
        InvalidInput,
        InvalidTopic,
        InvalidCursor,
        EventTooLarge,
        UnsupportedMediaType,
        TopicNotFound,
        TopicClosed,
        Unauthorized,
        TokenExpired,
        Forbidden,
        TooManyRequests,
        StoreUnavailable,
    )
}
_BY_STATUS: dict[int, type[SSEHubError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: TopicNotFound,
    409: TopicClosed,
    413: EventTooLarge,
    415: UnsupportedMediaType,
    429: TooManyRequests,
    503: StoreUnavailable,
}


@dataclass(frozen=True, slots=True)
class TopicState(TopicInfo):
    """A topic as the server reports it: its stored state and how many subscribers it has there."""

    subscribers: int = 0

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> TopicState:
        try:
            return cls(
                name=item["topic"],
                last_id=int(item["last_id"]),
                first_id=int(item["first_id"]),
                status=item["status"],
                created=float(item.get("created") or 0.0),
                updated=float(item.get("updated") or 0.0),
                closed_at=item.get("closed_at"),
                meta=dict(item.get("meta") or {}),
                subscribers=int(item.get("subscribers") or 0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(f"unexpected topic description from the server: {exc!r}") from None


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after `failures` attempts in a row failed: exponential, capped, with jitter.

    "Equal jitter": between half and all of min(cap, base * 2**(failures - 1)), so that many
    clients cut off together (a server restart) do not all come back at the same instant.
    """
    if failures <= 0:
        return 0.0
    ceiling: float = min(cap, base * 2.0 ** min(failures - 1, 32))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _error(response: httpx.Response) -> SSEHubError:
    """The typed error for an error answer: by the server's error code, else by the HTTP status."""
    status = response.status_code
    code: Any = None
    message: Any = None
    try:
        detail = response.json()["error"]
        code, message = detail["code"], detail["message"]
    except (ValueError, KeyError, TypeError):
        pass
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    cls = cls or _BY_STATUS.get(status) or (InvalidInput if 400 <= status < 500 else ServerError)
    if not isinstance(message, str) or not message:
        message = f"{response.request.method} {response.request.url} answered {status} {response.reason_phrase}"
    exc = cls(message)
    exc.status = status  # the real answer, which may differ from the class's own (e.g. a proxy's 502)
    return exc


def _transport_error(base_url: str, exc: httpx.TransportError) -> TransportError:
    if isinstance(exc, httpx.TimeoutException):
        reason = "timed out"
    else:
        # The OS's own words ("Connection refused") say the most; httpx may wrap them in its own.
        cause: BaseException | None = exc
        while cause is not None and not (isinstance(cause, OSError) and (cause.errno or cause.strerror)):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, OSError):
            # Not strerror first: asyncio puts "Connect call failed (...)" there. gaierror numbers are negative.
            text = os.strerror(cause.errno) if cause.errno and cause.errno > 0 else str(cause.strerror)
        else:
            text = str(exc)
        text = re.sub(r"^\[Errno -?\d+\]\s*", "", text).strip() or type(exc).__name__
        reason = text[0].lower() + text[1:]
    error = TransportError(f"cannot reach {base_url}: {reason}")
    error.__cause__ = exc
    return error


def _event(sse: ServerSentEvent) -> Event:
    if not sse.id.isascii() or not sse.id.isdigit():
        raise ServerError(
            f"the stream sent an event without an integer id ({sse.id[:40]!r}): is this an ssehub server?"
        )
    return Event(int(sse.id), sse.event, sse.data)


def _event_json(event: str, data: Any) -> dict[str, Any]:
    if not isinstance(event, str):
        raise InvalidInput("an event name must be a string")
    NewEvent(event)  # a bad name fails here, before any request
    return {"event": event, "data": data}


def _body(payload: Any) -> bytes:
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"event data is not JSON-serialisable: {exc}") from None


class AsyncClient:
    """An ssehub server, seen from asyncio code.

    ``token`` is sent as ``Authorization: Bearer``: a string, or a function returning a fresh one
    (called again on a 401 and when a stream's token expires). ``timeout`` bounds each request (and the
    connect of a subscription); ``read_timeout`` is how long a subscription may stay silent
    before it is considered dead and resumed on a new connection: keep it above the server's
    heartbeat. Requests that failed in a way a retry can fix (timeouts, 5xx, 429) are tried
    again up to ``retries`` times; a subscription retries for as long as it has to.
    ``retry_delay`` is the first reconnection delay until the server suggests its own with
    ``retry:``; ``max_delay`` caps the exponential backoff.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | TokenSource | None = None,
        timeout: float = 10.0,
        read_timeout: float = 60.0,
        retries: int = 4,
        retry_delay: float = 0.25,
        max_delay: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if retries < 0 or retry_delay < 0 or max_delay < 0 or timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive; retries and delays must not be negative")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.retry_delay = retry_delay
        self.max_delay = max_delay
        self._stream_timeout = httpx.Timeout(timeout, read=read_timeout)
        headers = {"user-agent": f"ssehub/{__version__}"}
        self._token_source = token if callable(token) else None
        self._token = token if isinstance(token, str) and token else None
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport, follow_redirects=True
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- credentials -----------------------------------------------------------------------------------------

    async def _auth(self, stale: str | None = None) -> dict[str, str]:
        """The Authorization header; with `stale` (the token the hub refused), a fresh token if there is a source."""
        if self._token_source is not None and (self._token is None or self._token == stale):
            fresh = self._token_source()
            if inspect.isawaitable(fresh):
                fresh = await fresh
            if not isinstance(fresh, str) or not fresh:
                raise InvalidInput("the token function must return a non-empty string")
            self._token = fresh
        return {"authorization": f"Bearer {self._token}"} if self._token else {}

    def _refreshable(self, response: httpx.Response, sent: str | None) -> bool:
        """A 401 that a fresh token may fix: there is a source, and the refused token is the current one."""
        return response.status_code == 401 and self._token_source is not None and sent is not None

    # -- requests --------------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> httpx.Response:
        """One request, retried when that is safe.

        A connection that could not be made never carried the request, so that is always
        retried. A timeout or a 5xx after the request was sent may hide a success, so those
        are retried only for idempotent requests (which includes every publish: its key).
        """
        failures = 0
        refreshed = False
        given = kwargs.pop("headers", None) or {}
        stale: str | None = None
        while True:
            headers = {**given, **await self._auth(stale)}
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if failures >= self.retries or not (idempotent or unsent):
                    raise _transport_error(self.base_url, exc) from exc
            else:
                if response.status_code < 400:
                    return response
                if not refreshed and self._refreshable(response, self._token):
                    # Refused before anything was done: safe to send again, with a fresh token, at once.
                    refreshed, stale = True, self._token
                    continue
                if failures >= self.retries or not idempotent or response.status_code not in _RETRYABLE_STATUS:
                    raise _error(response)
            failures += 1
            await asyncio.sleep(backoff(failures, self.retry_delay, self.max_delay))

    @staticmethod
    def _path(topic: str, suffix: str = "") -> str:
        return f"/topics/{validate_topic(topic)}{suffix}"

    async def publish(
        self, topic: str, event: str = "message", data: Any = None, *, idempotency_key: str | None = None
    ) -> int:
        """Append one event (``data`` is JSON) and return its id."""
        ids = await self._publish(topic, _event_json(event, data), idempotency_key)
        if len(ids) != 1:
            raise ServerError(f"the server answered {len(ids)} ids for one event")
        return ids[0]

    async def publish_many(
        self, topic: str, events: Iterable[tuple[str, Any]], *, idempotency_key: str | None = None
    ) -> list[int]:
        """Append ``(event, data)`` pairs as one atomic batch and return their ids, in order."""
        batch = [_event_json(event, data) for event, data in events]
        if not batch:
            return []
        return await self._publish(topic, batch, idempotency_key)

    async def _publish(self, topic: str, payload: Any, idempotency_key: str | None) -> list[int]:
        path = self._path(topic, "/events")
        body = _body(payload)
        # One key for every attempt of this call: the server appends the first that arrives and
        # answers the same ids to the others.
        key = idempotency_key or uuid.uuid4().hex
        response = await self._request(
            "POST",
            path,
            idempotent=True,
            content=body,
            headers={"content-type": "application/json", "idempotency-key": key},
        )
        try:
            ids = response.json()["ids"]
            return [int(i) for i in ids]
        except (ValueError, KeyError, TypeError):
            raise ServerError(f"unexpected answer to a publish: {response.text[:200]!r}") from None

    def stream(self, topic: str, *, idempotency_key: str | None = None) -> TopicStream:
        """A streamed publish: one long POST whose lines the server appends as they arrive.

            async with client.stream("answer-7") as s:
                await s.send("Hel", event="token")
                await s.send("lo", event="token")
            print(s.result.first_id, s.result.last_id, s.result.count)

        Each ``send`` is written at once (what piles up while a write is under way goes as one
        piece, which the server appends as one batch). The stream carries an ``Idempotency-Key``;
        when the connection fails or the server answers 503 (it is draining), the stream is sent
        again from its first line with the same key, and the server answers the lines it has with
        their stored ids instead of storing them twice. So the lines are kept until the end.
        An error the server answers (a bad line, a topic closed meanwhile) is raised by the next
        ``send`` or at the end of the block; what came before it stays appended.
        """
        return TopicStream(self, self._path(topic, "/events"), idempotency_key or uuid.uuid4().hex)

    async def topic(self, topic: str) -> TopicState:
        """The topic's state; `TopicNotFound` if it does not exist."""
        response = await self._request("GET", self._path(topic), idempotent=True)
        return TopicState.from_json(self._json(response))

    async def close_topic(self, topic: str, status: str = "completed") -> TopicState:
        """Close the topic with a final status; its subscribers read to the end and finish."""
        path = self._path(topic, "/close")
        response = await self._request("POST", path, idempotent=True, json={"status": status})
        return TopicState.from_json(self._json(response))

    async def delete_topic(self, topic: str) -> None:
        """Delete the topic and its events; `TopicNotFound` if it does not exist."""
        # Not idempotent: a retry after a lost answer would report the first try's success as 404.
        await self._request("DELETE", self._path(topic), idempotent=False)

    async def topics(self, prefix: str = "") -> list[TopicState]:
        """Every topic whose name starts with ``prefix``, by name."""
        found: list[TopicState] = []
        after = ""
        while True:
            params = {"prefix": prefix, "after": after, "limit": "1000"}
            payload = self._json(await self._request("GET", "/topics", idempotent=True, params=params))
            try:
                found.extend(TopicState.from_json(item) for item in payload["topics"])
                after = payload.get("next_after") or ""
            except (KeyError, TypeError, AttributeError):
                raise ServerError("unexpected answer to a topic listing") from None
            if not after:
                return found

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"{response.request.url} did not answer JSON: {response.text[:200]!r}") from None

    # -- runs --------------------------------------------------------------------------------------------------

    @staticmethod
    def _run_path(run_id: str, suffix: str = "") -> str:
        if not run_id or "/" in run_id or len(run_id) > 100:
            raise InvalidInput(f"invalid run id {run_id[:40]!r}")
        return f"/runs/{run_id}{suffix}"

    async def start_run(
        self, agent: str, body: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Start a run of `agent` and return at once with ``{"id", "status", "events_url"}``.

        One idempotency key covers every attempt of this call, so a retry never starts a second run.
        """
        if not agent or "/" in agent:
            raise InvalidInput(f"invalid agent name {agent[:40]!r}")
        key = idempotency_key or uuid.uuid4().hex
        response = await self._request(
            "POST",
            f"/agents/{agent}",
            idempotent=True,
            content=_body(dict(body or {})),
            headers={"content-type": "application/json", "prefer": "respond-async", "idempotency-key": key},
        )
        document = self._json(response)
        if not isinstance(document, dict) or not isinstance(document.get("id"), str):
            raise ServerError(f"unexpected answer to an agent call: {response.text[:200]!r}")
        return document

    async def run(self, run_id: str) -> dict[str, Any]:
        """The run's document: ``{"id", "agent", "status", "result", "error", ...}``."""
        document: dict[str, Any] = self._json(await self._request("GET", self._run_path(run_id), idempotent=True))
        return document

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        """Stop the run; ``{"id", "status"}`` (its final status if it had already ended)."""
        response = await self._request("POST", self._run_path(run_id, "/cancel"), idempotent=True)
        document: dict[str, Any] = self._json(response)
        return document

    async def subscribe_run(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The run's events after ``after`` (from the start by default), resumed like `subscribe`, until it ends."""
        async with contextlib.aclosing(self._follow(self._run_path(run_id, "/events"), after)) as events:
            async for event in events:
                yield event

    # -- subscribing -----------------------------------------------------------------------------------------

    async def subscribe(self, topic: str, after: int | None = None) -> AsyncIterator[Event]:
        """Yield the topic's events with an id above ``after``, in order, each once, until the topic closes.

        ``after=None`` starts at the current end (only new events), ``after=0`` at the start.
        Connections that drop, time out or end early (a server restarting) are resumed from the
        last yielded id. When retention dropped events the cursor needed, the server says so
        with an event named ``reset`` (data ``{"first_id", "requested_after"}``), which is
        yielded too, so a gap is never silent. A server that cannot be reached for the first
        connection raises `TransportError` at once (a wrong URL should not hang); once
        connected, it is waited for.
        """
        path = self._path(topic, "/events")
        if after is None:
            try:
                after = (await self.topic(topic)).last_id
            except TopicNotFound:
                after = 0  # everything it will ever hold is new
        # An inner generator is closed here, not left to the garbage collector: that would close
        # it in a task of its own, which a loop that stops next (the sync client's) never runs.
        async with contextlib.aclosing(self._follow(path, after)) as events:
            async for event in events:
                yield event

    async def _follow(self, path: str, after: int) -> AsyncGenerator[Event, None]:
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidCursor(f"after must be a non-negative integer, got {after!r}")
        cursor = after
        decoder = Decoder()
        failures = 0
        connected = False
        stale: str | None = None  # the token the hub said was expired or refused
        refused = False
        while True:
            progress = clean = expired = False
            headers = {"accept": "text/event-stream", "last-event-id": str(cursor), **await self._auth(stale)}
            sent, stale = self._token, None
            try:
                async with self._http.stream("GET", path, headers=headers, timeout=self._stream_timeout) as response:
                    if response.status_code == 204:
                        return  # the topic is closed and we have read all of it
                    if response.status_code != 200:
                        await response.aread()
                        if not refused and self._refreshable(response, sent):
                            refused, stale = True, sent
                            continue  # once: a fresh token that is refused too is an answer
                        if response.status_code not in _RETRYABLE_STATUS:
                            raise _error(response)
                    else:
                        refused = False
                        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                        if media != "text/event-stream":
                            raise ServerError(f"{response.request.url} answered {media!r}, not an event stream")
                        connected = True
                        async for chunk in response.aiter_bytes():
                            for sse in decoder.feed(chunk):
                                if sse.event == "auth_expired":
                                    expired = True  # the hub ends the stream next; not the caller's event
                                    continue
                                event = _event(sse)
                                if event.event == "reset":
                                    # The log restarts at event.id + 1: go on from there.
                                    cursor = event.id
                                elif event.id <= cursor:
                                    continue  # already yielded (a server may replay what we saw)
                                else:
                                    cursor = event.id
                                progress = True
                                yield event
                        clean = True
            except httpx.TransportError as exc:
                if not connected:
                    raise _transport_error(self.base_url, exc) from exc
            finally:
                decoder.close()
            if expired:
                # The token ran out mid-stream: with a fresh one (if there is a source), go on from the cursor now.
                stale = sent
                continue
            # A stream that ended on its own after new events: the topic closed (the next request
            # answers 204) or the server is draining: ask again at once, then back off.
            if clean and progress:
                failures = 0
                continue
            failures = 1 if progress else failures + 1
            base = self.retry_delay if decoder.retry is None else decoder.retry / 1000
            await asyncio.sleep(backoff(failures, base, self.max_delay))


@dataclass(frozen=True, slots=True)
class StreamResult:
    """What a streamed publish appended: the range of its ids (None: nothing), how many, and the lines read.

    `ids` are the events' own ids in line order: others may publish to the topic between a
    stream's batches, so not every id from `first_id` to `last_id` need be the stream's.
    """

    first_id: int | None
    last_id: int | None
    count: int
    lines: int
    ids: tuple[int, ...] = ()

    @classmethod
    def from_json(cls, item: Any) -> StreamResult:
        try:
            first, last = item["first_id"], item["last_id"]
            ids = tuple(id for low, high in item.get("ranges", ()) for id in range(int(low), int(high) + 1))
            return cls(
                None if first is None else int(first),
                None if last is None else int(last),
                int(item["count"]),
                int(item["lines"]),
                ids,
            )
        except (KeyError, TypeError, ValueError):
            raise ServerError(f"unexpected answer to a streamed publish: {str(item)[:200]!r}") from None


class TopicStream:
    """A streamed publish to one topic (`AsyncClient.stream`): ``send`` events, then leave the block."""

    def __init__(self, client: AsyncClient, path: str, key: str) -> None:
        self._client = client
        self._path = path
        self.idempotency_key = key
        #: What the server appended, once the block has ended (also after an error, when the server said).
        self.result: StreamResult | None = None
        self._lines: list[bytes] = []  # everything sent, for a retry from the first line
        self._wake = asyncio.Event()
        self._ended = False
        self._task: asyncio.Task[StreamResult] | None = None

    async def __aenter__(self) -> TopicStream:
        # Owned by this block: it ends (or is cancelled) before the block is left.
        self._task = asyncio.create_task(self._run(), name=f"ssehub-stream {self._path}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError | KeyboardInterrupt):
            self._task.cancel()  # the server keeps what arrived and answers nobody
            await asyncio.gather(self._task, return_exceptions=True)
            return
        # A failed block still ends the stream properly: what it sent stays appended and is reported.
        self._ended = True
        self._wake.set()
        try:
            self.result = await self._task
        except SSEHubError:
            if exc_type is None:
                raise

    async def send(self, data: Any = None, *, event: str = "message") -> None:
        """Send one event (``data`` is JSON). Raises the error the server answered, if it has."""
        if self._task is None or self._ended:
            raise InvalidInput("send within `async with client.stream(topic) as s:`")
        if self._task.done():
            self._task.result()  # the server's answer came early: an error (or the stream was cut off)
            raise ServerError("the server ended the stream early")
        self._lines.append(_body(_event_json(event, data)) + b"\n")
        self._wake.set()

    async def _body(self) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            if sent < len(self._lines):
                chunk = b"".join(self._lines[sent:])
                sent = len(self._lines)
                yield chunk
                continue
            if self._ended:
                return
            self._wake.clear()
            await self._wake.wait()

    async def _run(self) -> StreamResult:
        client = self._client
        failures = 0
        refreshed = False
        stale: str | None = None
        while True:
            headers = {"content-type": "application/x-ndjson", "idempotency-key": self.idempotency_key}
            headers.update(await client._auth(stale))
            try:
                response = await client._http.post(
                    self._path, content=self._body(), headers=headers, timeout=client._stream_timeout
                )
            except httpx.TransportError as exc:
                if failures >= client.retries:
                    raise _transport_error(client.base_url, exc) from exc
            else:
                if response.status_code < 400:
                    return StreamResult.from_json(client._json(response))
                if not refreshed and client._refreshable(response, client._token):
                    refreshed, stale = True, client._token
                    continue
                if failures >= client.retries or response.status_code not in _RETRYABLE_STATUS:
                    with contextlib.suppress(ServerError):
                        self.result = StreamResult.from_json(client._json(response))
                    raise _error(response)
            failures += 1
            await asyncio.sleep(backoff(failures, client.retry_delay, client.max_delay))


class SyncTopicStream:
    """`TopicStream` for synchronous code (`Client.stream`): ``with client.stream(t) as s: s.send(...)``."""

    def __init__(self, client: Client, stream: TopicStream) -> None:
        self._client = client
        self._stream = stream

    @property
    def result(self) -> StreamResult | None:
        return self._stream.result

    def __enter__(self) -> SyncTopicStream:
        self._client._call(self._stream.__aenter__())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client._call(self._stream.__aexit__(exc_type, exc, tb))

    def send(self, data: Any = None, *, event: str = "message") -> None:
        self._client._call(self._stream.send(data, event=event))


async def _next(events: AsyncIterator[T]) -> T:
    return await anext(events)


#: How long `Client` waits for a coroutine it cancelled, or for its connections to close, before going on.
_CLEANUP_SECONDS = 5.0


def _settle(outcome: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    """Hand a finished task's outcome to the thread waiting for it."""
    if task.cancelled():
        outcome.cancel()
        outcome.set_running_or_notify_cancel()  # what wakes `concurrent.futures.wait` on a cancelled future
    elif (exc := task.exception()) is not None:
        outcome.set_exception(exc)
    else:
        outcome.set_result(task.result())


class Client:
    """The synchronous twin of `AsyncClient`, for scripts, notebooks and the CLI.

    It runs an `AsyncClient` on a private event loop in a background thread instead of
    repeating its logic over `httpx.Client`: the reconnect and retry loops are the subtle part
    and exist once, so the two clients cannot drift apart. A loop of its own (rather than
    `asyncio.run` per call) keeps connections pooled between calls and works where an event
    loop is already running in this thread, as in Jupyter.
    """

    def __init__(self, base_url: str = DEFAULT_URL, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ssehub-client", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._async = AsyncClient(base_url, **options)
        except BaseException:
            self._stop_loop()
            raise
        self.base_url = self._async.base_url

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # Bounded, as after Ctrl-C: a connection stuck in its cleanup must not keep the caller waiting.
            with contextlib.suppress(TimeoutError):
                self._call(self._async.aclose(), timeout=_CLEANUP_SECONDS)
            # What a caller left unfinished (an iterator not run to its end) is closed on the loop
            # while it still runs; a generator closed after the loop has stopped never finishes.
            with contextlib.suppress(TimeoutError):
                self._call(self._loop.shutdown_asyncgens(), timeout=_CLEANUP_SECONDS)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the client's loop and wait for its outcome.

        Interrupted (Ctrl-C) or out of time, the coroutine is cancelled and waited for, its cleanup
        included, before the exception goes on: nothing keeps running on the loop behind the
        caller's back, and what the caller does next (close the generator the coroutine was
        advancing) does not find it still running. `asyncio.run_coroutine_threadsafe` cannot
        promise that, as its future counts as done the moment it is cancelled. The wait is
        bounded, so Ctrl-C always hands control back.
        """
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        started: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self._loop.create_task(coro)
            task.add_done_callback(functools.partial(_settle, outcome))
            started.append(task)

        def cancel() -> None:
            for task in started:  # the loop runs callbacks in order: `start` has run by now
                task.cancel()

        try:
            self._loop.call_soon_threadsafe(start)
            return outcome.result(timeout)
        except BaseException:
            self._loop.call_soon_threadsafe(cancel)
            concurrent.futures.wait([outcome], timeout=_CLEANUP_SECONDS)
            raise

    def publish(
        self, topic: str, event: str = "message", data: Any = None, *, idempotency_key: str | None = None
    ) -> int:
        return self._call(self._async.publish(topic, event, data, idempotency_key=idempotency_key))

    def publish_many(
        self, topic: str, events: Iterable[tuple[str, Any]], *, idempotency_key: str | None = None
    ) -> list[int]:
        return self._call(self._async.publish_many(topic, list(events), idempotency_key=idempotency_key))

    def stream(self, topic: str, *, idempotency_key: str | None = None) -> SyncTopicStream:
        """See `AsyncClient.stream`: ``with client.stream(topic) as s: s.send(data, event=...)``."""
        return SyncTopicStream(self, self._async.stream(topic, idempotency_key=idempotency_key))

    def topic(self, topic: str) -> TopicState:
        return self._call(self._async.topic(topic))

    def close_topic(self, topic: str, status: str = "completed") -> TopicState:
        return self._call(self._async.close_topic(topic, status))

    def delete_topic(self, topic: str) -> None:
        self._call(self._async.delete_topic(topic))

    def topics(self, prefix: str = "") -> list[TopicState]:
        return self._call(self._async.topics(prefix))

    def start_run(
        self, agent: str, body: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return self._call(self._async.start_run(agent, body, idempotency_key=idempotency_key))

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call(self._async.run(run_id))

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self._call(self._async.cancel_run(run_id))

    def subscribe(self, topic: str, after: int | None = None) -> Iterator[Event]:
        """See `AsyncClient.subscribe`; leaving the loop early closes the connection."""
        return self._iterate(self._async.subscribe(topic, after))

    def subscribe_run(self, run_id: str, after: int = 0) -> Iterator[Event]:
        """See `AsyncClient.subscribe_run`."""
        return self._iterate(self._async.subscribe_run(run_id, after))

    def _iterate(self, events: AsyncIterator[Event]) -> Iterator[Event]:
        try:
            while True:
                try:
                    yield self._call(_next(events))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None and not self._loop.is_closed():
                # Bounded: a stream stuck in its cleanup must not keep Ctrl-C from returning.
                with contextlib.suppress(TimeoutError):
                    self._call(aclose(), timeout=_CLEANUP_SECONDS)
