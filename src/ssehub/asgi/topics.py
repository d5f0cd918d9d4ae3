"""The topic endpoints.

    POST   /topics/{topic}/events    publish one event, an atomic batch, or a text/plain body   (hot);
                                     an application/x-ndjson body is a stream of events (ingest.py)
    GET    /topics/{topic}/events    subscribe as SSE, or a JSON page with Accept: application/json (hot);
                                     ?format=native|ai-sdk|ag-ui and ?compact=1|0 choose the wire format
    GET    /topics/{topic}           topic info
    POST   /topics/{topic}/close     close with a final status
    DELETE /topics/{topic}           delete
    GET    /topics                   list

Topic names may contain `/`. The two hot endpoints are dispatched by `app.py`
before the router (see there); the others are Starlette routes, with the
suffixed route first so that `/topics/a/close` is not read as a topic `a/close`.
So a name ending in `/events` or `/close` would be shadowed by those routes: publishing,
subscribing and info refuse such names (400); close and delete still take them, so that a
topic made before (or through the library) can be ended and removed. `HEAD /topics/{topic}/events` answers the headers
a subscriber would get, without subscribing.

Rights (`ssehub.access`, checked with `auth.py`): reading a topic in any way needs `subscribe` on it, and the
listing shows only such topics; publishing, closing and deleting need `publish`.
The owner of a run (host, pid) is an internal that only `admin` sees.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from ..access import PUBLISH, SUBSCRIBE, Principal
from ..events import TopicInfo, validate_topic
from ..exceptions import InvalidCursor, InvalidInput, InvalidTopic, TopicNotFound, UnsupportedMediaType
from ..hub import Hub
from .auth import Access
from .ingest import NDJSON, STREAM_MEDIA, StreamIngest
from .requests import (
    checked_idempotency_key,
    json_events,
    offload_of,
    parse_limit,
    publish_headers,
    query_value,
    read_json_object,
    receive_body,
    request_cursor,
    request_format,
    request_position,
    text_event,
)
from .responses import SSE_HEADERS
from .subscriptions import Reading, SubscriptionResponse, reading_for

__all__ = ["TopicEndpoints", "topic_document"]

#: Topics a listing reads from the store per request, at most, to find the ones a token may see.
_LISTING_SCAN = 10_000

#: The ends of a topic name that the routes of this module would take for themselves.
_SHADOWED = ("/events", "/close")


def http_topic(name: str) -> str:
    """A valid topic name that these routes can reach: InvalidTopic (400) otherwise."""
    validate_topic(name)
    if name.endswith(_SHADOWED):
        raise InvalidTopic(f"a topic name may not end in /events or /close (the routes of a topic do): {name[:50]!r}")
    return name


def topic_document(info: TopicInfo, subscribers: int, principal: Principal) -> dict[str, Any]:
    """A topic as `GET /topics/{t}` shows it to `principal`: a run's owner (host, pid) for admins only."""
    out = info.as_dict(subscribers)
    if not principal.admin and "owner" in out.get("meta", {}):
        out["meta"] = {k: v for k, v in out["meta"].items() if k != "owner"}
    return out


class TopicEndpoints:
    """The topic endpoints of one hub: the two hot ones as methods, the rest as `routes()`."""

    def __init__(self, hub: Hub, access: Access) -> None:
        self.hub = hub
        self.config = hub.config
        self.access = access
        self.ingest = StreamIngest(hub, access)

    # -- the hot endpoints ---------------------------------------------------------------------------------

    async def publish(self, scope: Scope, receive: Receive, topic: str) -> bytes | Response:
        """`POST /topics/{t}/events`, as a plain ASGI handler (no Request): the body of the 200 JSON answer,
        or the whole answer of a streamed publish (ingest.py).

        It reads the scope's headers once and the body straight from `receive`; what it raises, the app
        answers as a JSON error. Each kind of body has its branch here, chosen by its media type.
        """
        http_topic(topic)
        media, length, key = publish_headers(scope)
        if media in STREAM_MEDIA:
            return await self.ingest.publish(Request(scope, receive), topic)
        self.access.require_scope(scope, PUBLISH, topic)
        config = self.config
        if media == "text/plain" or media == "":
            body = await receive_body(receive, config.max_event_bytes, length)
            events = [text_event(query_value(scope, "event", "message"), body)]
        elif media == "application/json":
            body = await receive_body(receive, config.max_request_bytes, length)
            events, _ = await offload_of(scope).run(
                len(body), json_events, body, config.max_batch, config.max_event_bytes
            )
        else:
            raise UnsupportedMediaType(
                f"publish with Content-Type application/json, text/plain or {NDJSON}, not {media!r}"
            )
        ids = await self.hub.publish_many(topic, events, idempotency_key=checked_idempotency_key(key))
        if len(ids) == 1:
            return b'{"ids":[%d]}' % ids[0]
        return b'{"ids":[' + ",".join(map(str, ids)).encode() + b"]}"

    async def events(self, request: Request, topic: str) -> Response:
        principal = self.access.require(request, SUBSCRIBE, http_topic(topic))
        accept = request.headers.get("accept", "")
        page = "application/json" in accept and "text/event-stream" not in accept
        if request.method == "HEAD":
            # What a GET would answer, checked as a GET is, without a subscription or a read of the store.
            request_cursor(request)
            if page:
                parse_limit(request.query_params.get("limit"), 100, self.config.page_size)
                head = Response(headers={"content-type": "application/json"})
            else:
                request_format(request)
                head = Response(headers=SSE_HEADERS)
            del head.headers["content-length"]  # unknown without the body, which a HEAD does not get
            return head
        if page:
            return await self._page(request, topic, request_cursor(request))
        query = request.scope["query_string"]
        if b"format=" in query or b"compact=" in query:  # a byte test: the common reader pays nothing for it
            reading = await self._reading(request, topic)
            if reading is not None:
                return SubscriptionResponse(self.hub, topic, None, reading=reading, until=principal.expires)
        return SubscriptionResponse(self.hub, topic, request_cursor(request), until=principal.expires)

    async def _reading(self, request: Request, topic: str) -> Reading | None:
        """The wire format the reader asks for; None for the native one's fast path."""
        name, compact = request_format(request)
        if name == "native" and not compact:
            return None
        meta: dict[str, Any] = {}
        if name == "ag-ui":  # a run started by an AG-UI client shows that client its own ids
            try:
                meta = (await self.hub.info(topic)).meta
            except TopicNotFound:
                pass
        return reading_for(topic, name, compact, request_position(request), meta)

    async def _page(self, request: Request, topic: str, after: int | None) -> Response:
        limit = parse_limit(request.query_params.get("limit"), 100, self.config.page_size)
        cursor = after or 0
        # Bounded in bytes as a stream's pages are: a page of large events is shorter, `next_after` goes on.
        page = await self.hub.read(topic, cursor, limit, self.config.page_bytes)
        if cursor > page.last_id:
            raise InvalidCursor(f"after={cursor} is beyond the last id {page.last_id} of topic {topic!r}")
        return JSONResponse(
            {
                "topic": topic,
                "events": [e.as_dict() for e in page.events],
                "first_id": page.first_id,
                "last_id": page.last_id,
                "status": page.status,
                "reset": page.first_id > cursor + 1,
                "next_after": page.events[-1].id if page.events else cursor,
            }
        )

    # -- the routed endpoints ----------------------------------------------------------------------------------

    async def info(self, request: Request) -> Response:
        topic = http_topic(request.path_params["topic"])
        principal = self.access.require(request, SUBSCRIBE, topic)
        return JSONResponse(topic_document(await self.hub.info(topic), self.hub.subscribers(topic), principal))

    async def close(self, request: Request) -> Response:
        topic = validate_topic(request.path_params["topic"])
        principal = self.access.require(request, PUBLISH, topic)
        payload = await read_json_object(request, 64 * 1024, "a close")
        status = payload.get("status", "completed")
        if not isinstance(status, str):
            raise InvalidInput('close takes {"status": "completed" | "failed" | "cancelled"}')
        closed = await self.hub.close_topic(topic, status)
        return JSONResponse(topic_document(closed, self.hub.subscribers(topic), principal))

    async def delete(self, request: Request) -> Response:
        topic = validate_topic(request.path_params["topic"])
        self.access.require(request, PUBLISH, topic)
        await self.hub.delete_topic(topic)
        return JSONResponse({"deleted": topic})

    async def list_topics(self, request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        after = request.query_params.get("after", "")
        if len(prefix) > 200 or len(after) > 200:
            raise InvalidInput("prefix and after are at most 200 characters")
        limit = parse_limit(request.query_params.get("limit"), 100, 1000)
        principal = self.access.principal(request)
        if principal.admin:
            found = await self.hub.topics(prefix, after, limit)
            next_after = found[-1].name if len(found) == limit else None
        else:
            found, next_after = await self._visible(principal, prefix, after, limit)
        return JSONResponse(
            {
                "topics": [topic_document(t, self.hub.subscribers(t.name), principal) for t in found],
                "next_after": next_after,
            }
        )

    async def _visible(
        self, principal: Principal, prefix: str, after: str, limit: int
    ) -> tuple[list[TopicInfo], str | None]:
        """The topics `principal` may subscribe to, and where the next page starts (None: the end).

        The store is read under the narrowest prefix the token's patterns allow, a bounded number of
        topics per request: a page may then hold fewer than `limit` topics and still have a next one.
        """
        scan = principal.subscribe.listing_prefix(prefix)
        if scan is None:
            return [], None
        found: list[TopicInfo] = []
        cursor, read = after, 0
        step = max(limit, 500)  # the store is read in large pages, whatever the page asked for
        while read < _LISTING_SCAN:
            page = await self.hub.topics(scan, cursor, step)
            read += len(page)
            for info in page:
                cursor = info.name
                if info.name.startswith(prefix) and principal.may(SUBSCRIBE, info.name):
                    found.append(info)
                    if len(found) == limit:
                        return found, cursor
            if len(page) < step:
                return found, None
        return found, cursor

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/topics/{topic:path}/close", self.close, methods=["POST"]),
            Route("/topics", self.list_topics, methods=["GET"]),
            Route("/topics/{topic:path}", self.info, methods=["GET"]),
            Route("/topics/{topic:path}", self.delete, methods=["DELETE"]),
        ]
