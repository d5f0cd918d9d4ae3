"""The Durable Streams protocol on a hub: every topic is a stream at `{prefix}/{topic}`.

    PUT     create (idempotent with the same configuration), optionally with a body, closed, or as a fork
    POST    append (Stream-Seq, idempotent producers), close with `Stream-Closed: true`
    GET     read from `?offset=`: catch-up, `live=long-poll` or `live=sse`
    HEAD    metadata;  DELETE  delete (soft while forks read the history);  OPTIONS  CORS preflight

A stream is the topic of the same name, so what is appended here is read at
`/topics/{topic}/events` too, and a topic published through ssehub's own interface is an
`application/json` stream here (see `ssehub.durable.messages`). The protocol's pure parts
are in `ssehub.durable`; the atomic parts (create with a configuration, conditional
appends, expiry, soft deletes, fork pins) are the store's (`Store.create_stream` and the
rest). Live reads wait on the hub's own wake-ups: a long-poll or SSE reader holds a hub
subscription for its topic, so it is woken by the same tail as every other subscriber,
on this node or, through the Redis follower, from another.

A fork shares its source's history: it is a topic whose own ids start after `base`, and
ids up to `base` are read from the source (recursively, for a fork of a fork). A fork at a
sub-offset inside an append gets that append's prefix as its own first event.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..access import PUBLISH, SUBSCRIBE
from ..durable import frames, headers, messages, offsets
from ..events import Event, NewEvent, validate_topic
from ..exceptions import EventTooLarge, Gone, InvalidInput, SSEHubError, TopicNotFound, Unauthorized
from ..hub import Hub
from ..stores import Appended, Change, Created, Producer, Store, StreamState
from ..tail import Tail
from .auth import Access
from .requests import content_length, offload_of
from .responses import EventSourceResponse

__all__ = ["DurableStreams"]

log = logging.getLogger("ssehub.durable")

#: The configuration of a topic created through ssehub's own interface.
_NATIVE = {"content_type": messages.JSON}
_DEFAULT_TYPE = "application/octet-stream"

_REQUEST_HEADERS = ", ".join(("Authorization", "Content-Type", "Last-Event-ID", *headers.REQUEST_HEADERS))
# On every response, errors included: browsers must not sniff stream bytes into something runnable. CORS
# headers are not among them: `ssehub.asgi.auth` adds them for the origins the hub allows (--cors-origin).
_COMMON = {"x-content-type-options": "nosniff", "cross-origin-resource-policy": "cross-origin"}
_COMMON_RAW = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in _COMMON.items()]
_CACHEABLE = "public, max-age=60, stale-while-revalidate=300"


def _json_messages(body: bytes, create: bool, max_batch: int) -> list[str]:
    # Module-level, so that a worker process of `Offload` can run it.
    return messages.json_messages(body, allow_empty=create, max_items=max_batch)


class _Plain:
    """A whole response (headers and a body known up front) with the headers every response carries.

    Leaner than Starlette's Response on the append path, which is the protocol's busiest."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.status, self.headers, self.body = status, headers or {}, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        raw += _COMMON_RAW
        if self.status not in (204, 304):
            raw.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


@dataclass(frozen=True, slots=True)
class _Config:
    """A stream's configuration, as kept in its topic's metadata under "durable"."""

    content_type: str
    ttl: int | None = None
    expires_at: str | None = None
    fork: dict[str, Any] | None = None

    @classmethod
    def of(cls, state: StreamState) -> _Config:
        raw: dict[str, Any] = state.info.meta.get("durable") or _NATIVE
        return cls(raw["content_type"], raw.get("ttl"), raw.get("expires_at"), raw.get("fork"))

    @property
    def media(self) -> str:
        return headers.media_type(self.content_type)

    @property
    def base(self) -> int:
        return int(self.fork["base"]) if self.fork else 0

    def meta(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"content_type": self.content_type}
        if self.ttl is not None:
            raw["ttl"] = self.ttl
        if self.expires_at is not None:
            raw["expires_at"] = self.expires_at
        if self.fork is not None:
            raw["fork"] = self.fork
        return {"durable": raw}

    def same(self, other: _Config) -> bool:
        """Whether a PUT of `other` asks for this very stream (content types compare by media type)."""
        expires = (headers.expires_at(self.expires_at), headers.expires_at(other.expires_at))
        fork = [{k: f.get(k) for k in ("from", "offset", "sub_offset")} if f else None for f in (self.fork, other.fork)]
        return self.media == other.media and self.ttl == other.ttl and expires[0] == expires[1] and fork[0] == fork[1]


class _Reply(Exception):
    """A finished response, raised from deep inside a handler (a 4xx with the protocol's headers)."""

    def __init__(self, response: _Plain) -> None:
        self.response = response


class _Window:
    """The recent events of a topic that has live readers here, as the store reported them.

    Live readers woken by the hub's tail take what is new from here instead of each reading the
    store, and readers at the same position share one encoded frame: a thousand readers cost one
    read and one encoding per append, as ssehub's own subscribers do.
    """

    SIZE = 1024

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.readers = 0
        self.frames: dict[tuple[int, str, bool], bytes] = {}

    def push(self, events: tuple[Event, ...]) -> None:
        if self.events and events[0].id != self.events[-1].id + 1:
            self.events = []  # a gap (or a topic created again): start afresh
        self.events.extend(events)
        if len(self.events) > self.SIZE * 2:
            del self.events[: len(self.events) - self.SIZE]
        self.frames.clear()

    def after(self, after: int, last_id: int) -> list[Event] | None:
        """Events after `after` up to `last_id`, or None when the window does not hold them all."""
        if after >= last_id:
            return []
        if not self.events or self.events[0].id > after + 1 or self.events[-1].id < last_id:
            return None
        return self.events[after + 1 - self.events[0].id : last_id + 1 - self.events[0].id]


def _error(status: int, code: str, message: str, extra: Mapping[str, str] | None = None) -> _Plain:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return _Plain(status, {"content-type": "application/json", **(extra or {})}, body)


def _fail(status: int, code: str, message: str, extra: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(_error(status, code, message, extra))


class DurableStreams:
    """The protocol for `hub` at `prefix`, as ASGI middleware in front of `app` (the rest of the hub's
    interface): requests under the prefix are answered here, without the router; the rest pass on."""

    def __init__(
        self,
        app: ASGIApp,
        hub: Hub,
        access: Access,
        *,
        prefix: str = "/v1/stream",
        long_poll_timeout: float = 15.0,
        sse_duration: float = 60.0,
        chunk_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.hub = hub
        self.access = access
        self.prefix = prefix.rstrip("/")
        self.long_poll_timeout = long_poll_timeout
        self.sse_duration = sse_duration
        self.chunk_bytes = chunk_bytes
        self._windows: dict[str, _Window] = {}
        self._configs: dict[str, _Config] = {}
        hub.store.add_listener(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.deleted:
            self._configs.pop(change.topic, None)
        window = self._windows.get(change.topic)
        if window is not None:
            if change.events:
                window.push(change.events)
            if change.deleted:
                window.events, window.frames = [], {}

    @contextlib.asynccontextmanager
    async def _live(self, topic: str, after: int) -> AsyncIterator[tuple[Tail, _Window]]:
        """A hub subscription (the wake-ups, and following the topic on a shared store) and the window."""
        window = self._windows.get(topic) or self._windows.setdefault(topic, _Window())
        window.readers += 1
        try:
            async with self.hub.subscription(topic, after) as sub:
                yield sub.tail, window
        finally:
            window.readers -= 1
            if window.readers == 0 and self._windows.get(topic) is window:
                del self._windows[topic]

    async def _next(self, topic: str, tail: Tail, window: _Window, after: int) -> tuple[list[Event], int, bool] | None:
        """What is new after `after`: (events, the stream's last id, closed), from the window when it
        holds them, else from the store; None when the stream is gone."""
        if tail.deleted:
            return None
        fresh = window.after(after, tail.last_id)
        if fresh is not None:
            events = self._chunk(fresh)
            return events, tail.last_id, tail.status != "open"
        state = await self.store.stream_state(topic)
        if state is None or state.dead(time.time()):
            return None
        events = await self._read_chunk(state, after)
        return events, state.info.last_id, state.info.closed

    @property
    def store(self) -> Store:
        return self.hub.store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._ours(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self._handle(
                request, {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            )
        except _Reply as reply:
            response = reply.response
        except ClientDisconnect:
            return  # gone while sending its body: nobody to answer, and nothing was written
        except SSEHubError as exc:
            extra = {"www-authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
            response = _error(exc.status, exc.code, exc.message, extra)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            response = _error(500, "internal_error", "internal server error")
        await response(scope, receive, send)

    # -- routing --------------------------------------------------------------------------------------

    def _path(self, scope: Scope) -> str:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        return path[len(root) :] if root and path.startswith(root) else path

    def _ours(self, scope: Scope) -> bool:
        return self._path(scope).startswith(self.prefix + "/")

    def _topic(self, request: Request) -> str:
        return validate_topic(self._path(request.scope)[len(self.prefix) + 1 :])

    async def _handle(self, request: Request, h: dict[str, str]) -> ASGIApp:
        method = request.method
        if method == "OPTIONS":
            return _Plain(
                204,
                {
                    "access-control-allow-methods": "GET, HEAD, PUT, POST, DELETE, OPTIONS",
                    "access-control-allow-headers": _REQUEST_HEADERS,
                    "access-control-max-age": "86400",
                },
            )
        topic = self._topic(request)
        # The same keys and tokens as every other endpoint; a stream's path is a topic name for the patterns.
        if method in ("GET", "HEAD"):
            principal = self.access.require(request, SUBSCRIBE, topic)
            return await (self._read(request, topic, h, principal.expires) if method == "GET" else self._head(topic))
        if method in ("PUT", "POST", "DELETE"):
            self.access.require(request, PUBLISH, topic)
            if method == "PUT":
                return await self._create(request, topic, h)
            if method == "POST":
                return await self._append(request, topic, h)
            return await self._delete(topic)
        return _error(
            405,
            "method_not_allowed",
            f"{method} is not a Durable Streams operation",
            {"allow": "GET, HEAD, PUT, POST, DELETE, OPTIONS"},
        )

    # -- state ----------------------------------------------------------------------------------------

    async def _live_state(self, topic: str) -> StreamState:
        """The stream, or the protocol's answer for one that does not exist (404) or is gone (410)."""
        state = await self.store.stream_state(topic)
        if state is None:
            raise _fail(404, "not_found", f"no stream {topic!r}")
        if state.dead(time.time()):
            if state.deleted or state.forks:
                raise _fail(410, "gone", f"stream {topic!r} was deleted")
            raise _fail(404, "not_found", f"stream {topic!r} has expired")
        return state

    def _deadline(self, ttl: int | None, expires_at: str | None) -> float | None:
        if ttl is not None:
            return time.time() + ttl
        return headers.expires_at(expires_at)

    def _meta_headers(self, state: StreamState, config: _Config) -> dict[str, str]:
        out = {"content-type": config.content_type, "stream-next-offset": offsets.encode(state.info.last_id)}
        if state.info.closed:
            out["stream-closed"] = "true"
        if config.ttl is not None:
            out["stream-ttl"] = str(config.ttl)
        if config.expires_at is not None:
            out["stream-expires-at"] = config.expires_at
        return out

    async def _body(self, request: Request, h: dict[str, str], limit: int) -> bytes:
        content_length(h.get("content-length"), limit)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise EventTooLarge(f"request body is above the limit of {limit} bytes")
        return bytes(body)

    async def _events(self, request: Request, media: str, body: bytes, *, create: bool) -> list[NewEvent]:
        config = self.hub.config
        if messages.is_json(media):
            texts: list[str] = []
            if body.strip() or not create:
                texts = await offload_of(request.scope).run(len(body), _json_messages, body, create, config.max_batch)
        else:
            texts = [messages.encode_bytes(media, body)] if body else []
        for text in texts:
            if len(text) > config.max_event_bytes:
                raise EventTooLarge(f"a message of {len(text)} bytes is above the limit of {config.max_event_bytes}")
        return [NewEvent("message", text) for text in texts]

    # -- PUT --------------------------------------------------------------------------------------------

    async def _create(self, request: Request, topic: str, h: dict[str, str]) -> ASGIApp:
        ttl = headers.stream_ttl(h.get("stream-ttl"))
        expires = h.get("stream-expires-at")
        headers.expires_at(expires)
        if ttl is not None and expires is not None:
            raise InvalidInput("Stream-TTL and Stream-Expires-At exclude each other: send one")
        closed = headers.is_true(h.get("stream-closed"))
        fork = headers.fork_request(h)
        given_type = h.get("content-type") or None
        body = await self._body(request, h, self.hub.config.max_request_bytes)
        if fork is None:
            config = _Config(given_type or _DEFAULT_TYPE, ttl, expires)
            events = await self._events(request, config.media, body, create=True)
            created = await self.store.create_stream(
                topic, config.meta(), events, closed=closed, deadline=self._deadline(ttl, expires)
            )
            return await self._created(request, topic, config, created, closed)
        return await self._fork(request, topic, fork, given_type, ttl, expires, closed, body)

    async def _created(self, request: Request, topic: str, config: _Config, created: Created, closed: bool) -> ASGIApp:
        if created.released:
            await self.store.unpin_source(created.released, topic)
        state = created.state
        if created.outcome == "gone":
            raise _fail(409, "gone", f"stream {topic!r} was deleted and its name is kept for the forks that read it")
        if created.outcome == "exists":
            existing = _Config.of(state)
            if not existing.same(config) or state.info.closed != closed:
                raise _fail(409, "conflict", f"stream {topic!r} exists with another configuration")
            return _Plain(200, self._meta_headers(state, existing))
        out = self._meta_headers(state, config)
        out["location"] = str(request.url.replace(query=""))
        return _Plain(201, out)

    def _source_topic(self, request: Request, path: str) -> str:
        if path.startswith(("http://", "https://")):  # a whole URL: only its path counts (same server)
            path = urlsplit(path).path
        root = request.scope.get("root_path", "")
        for lead in (root + self.prefix + "/", self.prefix + "/"):
            if lead != "/" and path.startswith(lead):
                return validate_topic(path[len(lead) :])
        return validate_topic(path.lstrip("/"))

    async def _fork(
        self,
        request: Request,
        topic: str,
        fork: headers.ForkRequest,
        given_type: str | None,
        ttl: int | None,
        expires: str | None,
        closed: bool,
        body: bytes,
    ) -> ASGIApp:
        source = self._source_topic(request, fork.source)
        # A fork reads its source's history: whoever makes one must be allowed to read the source.
        self.access.require(request, SUBSCRIBE, source)
        if source == topic:
            raise InvalidInput("a stream cannot be forked from itself")
        pinned = await self.store.pin_source(source, topic)
        if pinned is None:
            raise _fail(404, "not_found", f"no stream {source!r} to fork from")
        if pinned.deleted:
            raise _fail(409, "gone", f"stream {source!r} was deleted: it cannot be forked")
        keep = False
        try:
            src = _Config.of(pinned)
            if given_type is not None and headers.media_type(given_type) != src.media:
                raise _fail(409, "conflict", f"a fork has its source's content type {src.content_type!r}")
            tail = pinned.info.last_id
            at = tail if fork.offset is None else offsets.parse(fork.offset)
            at = tail if at == offsets.NOW else at
            if at > tail:
                raise InvalidInput(f"Stream-Fork-Offset is past the tail of {source!r}")
            base, prefix = at, list[NewEvent]()
            if fork.sub_offset:
                base, prefix = await self._sub_offset(request, pinned, src, at, fork.sub_offset)
            if ttl is None and expires is None:
                ttl, expires = src.ttl, src.expires_at
            origin = {"from": source, "offset": offsets.encode(at), "sub_offset": fork.sub_offset, "base": base}
            config = _Config(src.content_type, ttl, expires, origin)
            events = prefix + await self._events(request, config.media, body, create=True)
            created = await self.store.create_stream(
                topic,
                config.meta(),
                events,
                closed=closed,
                deadline=self._deadline(ttl, expires),
                base=base,
                forked_from=source,
            )
            # The pin is this stream's when it was made now, or when the one there already is this same fork.
            keep = created.outcome == "created" or (
                created.outcome == "exists" and (_Config.of(created.state).fork or {}).get("from") == source
            )
            return await self._created(request, topic, config, created, closed)
        finally:
            if not keep:
                await self.store.unpin_source(source, topic)

    async def _sub_offset(
        self, request: Request, source: StreamState, config: _Config, at: int, sub: int
    ) -> tuple[int, list[NewEvent]]:
        """Resolve a sub-offset past `at`: JSON counts messages (each its own event), anything else
        counts bytes of the next append, whose prefix becomes the fork's own first event."""
        if messages.is_json(config.media):
            if at + sub > source.info.last_id:
                raise InvalidInput("Stream-Fork-Sub-Offset is past the source's last message")
            return at + sub, []
        events = await self._history(source, at, 1)
        if not events:
            raise InvalidInput("Stream-Fork-Sub-Offset is past the source's tail")
        data = messages.decode(config.media, events[0])
        if sub > len(data):
            raise InvalidInput(f"Stream-Fork-Sub-Offset {sub} is past the end of that append ({len(data)} bytes)")
        if sub == len(data):
            return at + 1, []
        return at, await self._events(request, config.media, data[:sub], create=True)

    # -- POST -------------------------------------------------------------------------------------------

    async def _config(self, topic: str) -> _Config:
        """The stream's configuration; a missing or gone stream is answered (404/410) here.

        A store of one process reports every change to this one, so its configurations are kept
        (dropped on delete); a shared store's may change on another node, so they are read each time.
        """
        config = self._configs.get(topic)
        if config is None:
            config = _Config.of(await self._live_state(topic))
            if not self.store.shared:
                if len(self._configs) >= 10_000:
                    self._configs.clear()
                self._configs[topic] = config
        return config

    async def _append(self, request: Request, topic: str, h: dict[str, str]) -> ASGIApp:
        close = headers.is_true(h.get("stream-closed"))
        claim = headers.producer(h)
        producer = None if claim is None else Producer(*claim)
        seq = headers.stream_seq(h.get("stream-seq"))
        body = await self._body(request, h, self.hub.config.max_request_bytes)
        if not body and not close:
            raise InvalidInput("an append needs a body (or Stream-Closed: true to close)")
        config = await self._config(topic)
        events: list[NewEvent] = []
        if body:
            given = h.get("content-type")
            if not given:
                raise InvalidInput(f"an append needs a Content-Type ({config.content_type})")
            if headers.media_type(given) != config.media:
                # A closed stream answers that first (with its final offset), whatever the content type.
                if not (await self._live_state(topic)).info.closed:
                    raise _fail(409, "conflict", f"stream {topic!r} takes {config.content_type}, not {given}")
            else:
                events = await self._events(request, config.media, body, create=False)
        renew = time.time() + config.ttl if config.ttl is not None else None
        done = await self.store.append_stream(topic, events, seq=seq, producer=producer, close=close, renew=renew)
        return self._appended(topic, done, producer, bool(body))

    def _appended(self, topic: str, done: Appended, producer: Producer | None, has_body: bool) -> ASGIApp:
        out = {"stream-next-offset": offsets.encode(done.last_id)}
        if done.closed:
            out["stream-closed"] = "true"
        if done.epoch is not None and producer is not None and done.outcome in ("ok", "duplicate", "stale_epoch"):
            out["producer-epoch"] = str(done.epoch)
        if done.seq is not None and producer is not None and done.outcome in ("ok", "duplicate"):
            out["producer-seq"] = str(done.seq)
        outcome = done.outcome
        if outcome == "ok":
            return _Plain(200 if producer is not None and has_body else 204, out)
        if outcome == "duplicate":
            return _Plain(204, out)
        if outcome == "closed":
            if not has_body:  # closing a closed stream again: nothing to do
                return _Plain(204, out)
            raise _fail(409, "closed", f"stream {topic!r} is closed", out)
        if outcome == "not_found":
            raise _fail(404, "not_found", f"no stream {topic!r}")
        if outcome == "gone":
            raise _fail(410, "gone", f"stream {topic!r} was deleted")
        if outcome == "seq_conflict":
            raise _fail(409, "seq_conflict", "Stream-Seq must be above the last one (byte-wise)", out)
        if outcome == "stale_epoch":
            raise _fail(403, "stale_epoch", "a newer epoch of this producer has written: this one is fenced", out)
        if outcome == "bad_epoch_seq":
            raise InvalidInput("a new Producer-Epoch starts at Producer-Seq 0")
        assert producer is not None and done.seq is not None
        out["producer-expected-seq"] = str(done.seq)
        out["producer-received-seq"] = str(producer.seq)
        raise _fail(409, "seq_gap", f"Producer-Seq {producer.seq} skips ahead: {done.seq} is next", out)

    # -- DELETE, HEAD ------------------------------------------------------------------------------------

    async def _delete(self, topic: str) -> ASGIApp:
        outcome = await self.store.delete_stream(topic)
        if outcome == "not_found":
            raise _fail(404, "not_found", f"no stream {topic!r}")
        if outcome == "gone":
            raise _fail(410, "gone", f"stream {topic!r} was deleted")
        return _Plain(204)

    async def _head(self, topic: str) -> ASGIApp:
        state = await self._live_state(topic)
        out = self._meta_headers(state, _Config.of(state))
        out["cache-control"] = "no-store"
        return _Plain(200, out)

    # -- reading ----------------------------------------------------------------------------------------

    async def _history(self, state: StreamState, after: int, limit: int) -> list[Event]:
        """Up to `limit` events after `after`, a fork's inherited ones read from its source."""
        config = _Config.of(state)
        base = config.base
        out: list[Event] = []
        if after < base and config.fork is not None:
            source = await self.store.stream_state(config.fork["from"])
            if source is None:
                raise Gone(f"the history {state.info.name!r} forked from is gone")
            want = min(limit, base - after)
            out = [e for e in await self._history(source, after, want) if e.id <= base]
            if len(out) < want:  # ids are contiguous: fewer means the source lost some
                raise Gone(f"the history {state.info.name!r} forked from is gone")
            if len(out) >= limit:
                return out
        start = max(after, base)
        page = await self.store.read(state.info.name, start, limit - len(out))
        if page is None:
            raise TopicNotFound(f"no stream {state.info.name!r}")
        if page.first_id > start + 1 and page.last_id > start:
            raise Gone(
                f"retention dropped the events after {offsets.encode(start)}; the oldest left is {page.first_id}"
            )
        return out + page.events

    async def _read_chunk(self, state: StreamState, after: int) -> list[Event]:
        """About chunk_bytes of events after `after` (at least one), read in pages sized from the
        events seen so far, so that large events are not read only to be left out."""
        out: list[Event] = []
        size, limit = 0, min(100, self.hub.config.page_size)
        while True:
            page = await self._history(state, after, limit)
            for e in page:
                size += len(e.data)
                if size > self.chunk_bytes and out:
                    return out
                out.append(e)
            if len(page) < limit:
                return out
            after = page[-1].id
            limit = max(1, min(self.hub.config.page_size, (self.chunk_bytes - size) * len(out) // max(size, 1) + 1))

    def _chunk(self, events: list[Event]) -> list[Event]:
        """At most chunk_bytes of events (always one), so one read is a bounded response."""
        total = 0
        for i, e in enumerate(events):
            total += len(e.data)
            if total > self.chunk_bytes and i:
                return events[:i]
        return events

    def _parse_read(self, request: Request) -> tuple[str | None, str | None, str | None]:
        values = request.query_params.getlist("offset")
        if len(values) > 1:
            raise InvalidInput("offset is given more than once")
        offset = values[0] if values else None
        if offset is not None and offset == "":
            raise InvalidInput("offset is empty: use -1 for the start")
        live = request.query_params.get("live")
        if live is not None and live not in ("long-poll", "sse"):
            raise InvalidInput(f"live must be long-poll or sse, not {live[:20]!r}")
        if live is not None and offset is None:
            raise InvalidInput(f"live={live} needs an offset (-1 for the start, now for the tail)")
        return offset, live, request.query_params.get("cursor")

    async def _read(self, request: Request, topic: str, h: dict[str, str], until: float | None) -> ASGIApp:
        offset, live, cursor = self._parse_read(request)
        position = offsets.parse(offset) if offset is not None else 0
        state = await self._live_state(topic)
        config = _Config.of(state)
        if config.ttl is not None:
            await self.store.touch_stream(topic, time.time() + config.ttl)
        after = state.info.last_id if position == offsets.NOW else position
        if after > state.info.last_id:
            raise InvalidInput(f"offset {offset} is past the tail of stream {topic!r}")
        if live == "sse":
            return self._sse(topic, config, after, cursor, until)
        if position == offsets.NOW and live is None:
            out = self._meta_headers(state, config)
            out.update({"stream-up-to-date": "true", "cache-control": "no-store"})
            return _Plain(200, out, b"[]" if messages.is_json(config.media) else b"")
        events = await self._read_chunk(state, after)
        if not events and live == "long-poll":
            if state.info.closed:
                return self._poll_end(state.info.last_id, None, closed=True)
            waited = await self._wait(topic, after)
            if waited is None:
                latest = await self.store.stream_state(topic)
                closed = latest is not None and latest.info.closed
                return self._poll_end(after, headers.response_cursor(cursor, time.time()), closed=closed)
            events, last_id, closed = waited
            if not events:
                return self._poll_end(last_id, None, closed=True)
            return self._page(h, config, state.info.created, offset, after, events, last_id, closed, live, cursor)
        return self._page(
            h,
            config,
            state.info.created,
            offset,
            after,
            events,
            state.info.last_id,
            state.info.closed,
            live,
            cursor,
        )

    def _poll_end(self, after: int, cursor: str | None, *, closed: bool) -> ASGIApp:
        out = {"stream-next-offset": offsets.encode(after), "stream-up-to-date": "true", "cache-control": "no-store"}
        if closed:
            out["stream-closed"] = "true"
        elif cursor is not None:
            out["stream-cursor"] = cursor
        return _Plain(204, out)

    def _page(
        self,
        h: dict[str, str],
        config: _Config,
        created: float,
        offset: str | None,
        after: int,
        events: list[Event],
        last_id: int,
        stream_closed: bool,
        live: str | None,
        cursor: str | None,
    ) -> ASGIApp:
        end = events[-1].id if events else after
        up_to_date = end >= last_id
        closed = stream_closed and up_to_date
        out = {"content-type": config.content_type, "stream-next-offset": offsets.encode(end)}
        if up_to_date:
            out["stream-up-to-date"] = "true"
        if closed:
            out["stream-closed"] = "true"
        if live == "long-poll":
            out["stream-cursor"] = headers.response_cursor(cursor, time.time())
        tag = headers.etag(repr(created), offset or offsets.START, offsets.encode(end), closed)
        out["etag"] = tag
        out["cache-control"] = _CACHEABLE
        if headers.etag_matches(h.get("if-none-match"), tag):
            return _Plain(304, {"etag": tag, "cache-control": _CACHEABLE})
        return _Plain(200, out, messages.join(config.media, events))

    async def _wait(self, topic: str, after: int) -> tuple[list[Event], int, bool] | None:
        """Wait for events after `after`, up to the long-poll timeout; None when none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.long_poll_timeout
        async with self._live(topic, after) as (tail, window):
            while not self.hub.draining:
                if tail.last_id > after or tail.ended:
                    got = await self._next(topic, tail, window, after)
                    if got is None:
                        return None
                    if got[0] or got[2]:
                        return got
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        await tail.wait()
                except TimeoutError:
                    return None
        return None

    def _sse(self, topic: str, config: _Config, after: int, cursor: str | None, until: float | None) -> ASGIApp:
        extra = {"content-type": "text/event-stream"}
        if messages.is_binary(config.media):
            extra["stream-sse-data-encoding"] = "base64"
        extra.update(_COMMON)
        frames_ = self._sse_frames(topic, config, after, cursor, until)
        # heartbeat=None: the frames carry their own keep-alives, so the stream needs no second task.
        response: ASGIApp = EventSourceResponse(frames_, heartbeat=None, retry_ms=None, headers=extra)
        return response

    def _sse_payload(self, config: _Config, events: list[Event]) -> str:
        media = config.media
        if messages.is_json(media):
            return messages.join(media, events).decode("utf-8")
        if messages.is_binary(media):
            return "".join(e.data for e in events) if len(events) == 1 else _b64(media, events)
        return "".join(e.data for e in events)

    async def _sse_frames(
        self, topic: str, config: _Config, after: int, cursor: str | None, until: float | None
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        # The connection ends after `sse_duration` (so a CDN can collapse readers), or when the reader's token
        # expires: the protocol has no event for that; the client comes back with a fresh one from its offset.
        lasts = self.sse_duration if until is None else min(self.sse_duration, until - time.time())
        ends = loop.time() + lasts
        quiet = self.hub.config.quiet  # keep-alives a tick early: no silence outlasts the heartbeat
        first = True
        quiet_since = loop.time()
        async with self._live(topic, after) as (tail, window):
            behind = True  # read at once: the reader starts behind, or at the tail and owed a control event
            while not self.hub.draining and loop.time() < ends:
                if behind or tail.last_id > after or tail.ended:
                    got = await self._next(topic, tail, window, after)
                    if got is None:
                        return
                    events, last_id, stream_closed = got
                    start = after
                    if events:
                        after = events[-1].id
                    up_to_date = after >= last_id
                    closed = stream_closed and up_to_date
                    if events or closed or first:
                        next_cursor = headers.response_cursor(cursor, time.time())
                        key = (start, next_cursor, closed)
                        chunk = window.frames.get(key) if events else None
                        if chunk is None:
                            chunk = frames.data(self._sse_payload(config, events)) if events else b""
                            chunk += frames.control(
                                offsets.encode(after), cursor=next_cursor, up_to_date=up_to_date, closed=closed
                            )
                            if events and up_to_date:  # what every reader at `start` will send next
                                window.frames[key] = chunk
                        yield chunk
                        first = False
                        quiet_since = loop.time()
                        if closed:
                            return
                    behind = not up_to_date
                    if behind:
                        continue
                if loop.time() - quiet_since >= quiet:
                    quiet_since = loop.time()
                    yield b": keep-alive\n\n"
                # No timer of its own per wait: the hub's heartbeat tick wakes every waiter often enough
                # to end the connection near `sse_duration`, and a thousand readers schedule no timers.
                await tail.wait()


def _b64(media: str, events: list[Event]) -> str:
    # Each stored event is padded base64 of its own: several are joined as bytes and encoded once.
    return base64.b64encode(b"".join(messages.decode(media, e) for e in events)).decode("ascii")
