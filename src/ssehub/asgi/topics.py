"""The topic endpoints.

    POST   /topics/{topic}/events    publish one event, an atomic batch, or a text/plain body   (hot)
    GET    /topics/{topic}/events    subscribe as SSE, or a JSON page with Accept: application/json (hot);
                                     ?format=native|ai-sdk|ag-ui and ?compact=1|0 choose the wire format
    GET    /topics/{topic}           topic info
    POST   /topics/{topic}/close     close with a final status
    DELETE /topics/{topic}           delete
    GET    /topics                   list

Topic names may contain `/`. The two hot endpoints are dispatched by `app.py`
before the router (see there); the others are Starlette routes, with the
suffixed route first so that `/topics/a/close` is not read as a topic `a/close`.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..events import validate_topic
from ..exceptions import InvalidCursor, InvalidInput, TopicNotFound, Unauthorized
from ..hub import Hub
from .requests import (
    idempotency_key,
    parse_events,
    parse_limit,
    read_json_object,
    request_cursor,
    request_format,
    request_position,
)
from .subscriptions import Reading, SubscriptionResponse, reading_for

__all__ = ["TopicEndpoints"]


class TopicEndpoints:
    """The topic endpoints of one hub: the two hot ones as methods, the rest as `routes()`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.config = hub.config

    def authorise(self, request: Request) -> None:
        token = self.config.token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("this hub needs Authorization: Bearer <token> to change topics")

    # -- the hot endpoints ---------------------------------------------------------------------------------

    async def publish(self, request: Request, topic: str) -> Response:
        self.authorise(request)
        validate_topic(topic)
        config = self.config
        events, _ = await parse_events(request, config.max_request_bytes, config.max_event_bytes)
        ids = await self.hub.publish_many(topic, events, idempotency_key=idempotency_key(request))
        return JSONResponse({"ids": ids})

    async def events(self, request: Request, topic: str) -> Response:
        validate_topic(topic)
        accept = request.headers.get("accept", "")
        if "application/json" in accept and "text/event-stream" not in accept:
            return await self._page(request, topic, request_cursor(request))
        query = request.scope["query_string"]
        if b"format=" in query or b"compact=" in query:  # a byte test: the common reader pays nothing for it
            reading = await self._reading(request, topic)
            if reading is not None:
                return SubscriptionResponse(self.hub, topic, None, reading=reading)
        return SubscriptionResponse(self.hub, topic, request_cursor(request))

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
        page = await self.hub.read(topic, cursor, limit)
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
        topic = validate_topic(request.path_params["topic"])
        return JSONResponse((await self.hub.info(topic)).as_dict(self.hub.subscribers(topic)))

    async def close(self, request: Request) -> Response:
        self.authorise(request)
        topic = validate_topic(request.path_params["topic"])
        payload = await read_json_object(request, 64 * 1024, "a close")
        status = payload.get("status", "completed")
        if not isinstance(status, str):
            raise InvalidInput('close takes {"status": "completed" | "failed" | "cancelled"}')
        closed = await self.hub.close_topic(topic, status)
        return JSONResponse(closed.as_dict(self.hub.subscribers(topic)))

    async def delete(self, request: Request) -> Response:
        self.authorise(request)
        topic = validate_topic(request.path_params["topic"])
        await self.hub.delete_topic(topic)
        return JSONResponse({"deleted": topic})

    async def list_topics(self, request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        after = request.query_params.get("after", "")
        if len(prefix) > 200 or len(after) > 200:
            raise InvalidInput("prefix and after are at most 200 characters")
        limit = parse_limit(request.query_params.get("limit"), 100, 1000)
        found = await self.hub.topics(prefix, after, limit)
        return JSONResponse(
            {
                "topics": [t.as_dict(self.hub.subscribers(t.name)) for t in found],
                "next_after": found[-1].name if len(found) == limit else None,
            }
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/topics/{topic:path}/close", self.close, methods=["POST"]),
            Route("/topics", self.list_topics, methods=["GET"]),
            Route("/topics/{topic:path}", self.info, methods=["GET"]),
            Route("/topics/{topic:path}", self.delete, methods=["DELETE"]),
        ]
