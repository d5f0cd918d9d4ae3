"""The HTTP interface of a hub, as a Starlette app that can be mounted under any prefix.

    POST   /topics/{topic}/events    publish one event, an atomic batch, or a text/plain body
    GET    /topics/{topic}/events    subscribe as SSE, or a JSON page with Accept: application/json
    GET    /topics/{topic}           topic info
    POST   /topics/{topic}/close     close with a final status
    DELETE /topics/{topic}           delete
    GET    /topics                   list
    GET    /healthz                  liveness
    POST   /agents/{name}, GET /runs/{id}[/events], POST /runs/{id}/cancel: agent runs (see agents.py)
    GET    /_ssehub/ssehub.js        the browser client (see web.py)

Every error is JSON `{"error": {"code", "message"}}` with a 4xx/5xx status.
Topic names may contain `/`, so the routes with a suffix come first.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from .events import NewEvent, validate_topic
from .exceptions import EventTooLarge, InvalidCursor, InvalidInput, SSEHubError, Unauthorized, UnsupportedMediaType
from .hub import Hub
from .metrics import metrics_routes
from .responses import EventStreamResponse
from .web import client_routes

__all__ = ["create_app", "error_response"]

log = logging.getLogger("ssehub")

Endpoint = Callable[[Request], Awaitable[Response]]


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _ssehub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SSEHubError)
    headers = {"www-authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return error_response(exc.status, exc.code, exc.message, headers)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


# -- request parsing -------------------------------------------------------------------------------------


def parse_cursor(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise InvalidCursor(f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


def parse_limit(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or not 1 <= int(value[:6]) <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}, got {value[:40]!r}")
    return int(value)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise EventTooLarge(f"request body of {declared} bytes is above the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise EventTooLarge(f"request body is above the limit of {limit} bytes")
    return bytes(body)


def _event_from_json(item: Any) -> NewEvent:
    if not isinstance(item, dict):
        raise InvalidInput('each event must be a JSON object {"event": "...", "data": ...}')
    unknown = set(item) - {"event", "data"}
    if unknown:
        raise InvalidInput(f"unknown event fields: {sorted(unknown)}")
    name = item.get("event", "message")
    if not isinstance(name, str):
        raise InvalidInput('"event" must be a string')
    return NewEvent.from_json(name, item.get("data"))


async def parse_events(request: Request, hub: Hub) -> tuple[list[NewEvent], bool]:
    """The events of a publish request, and whether it was a JSON array (a batch)."""
    media = request.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
    if media == "application/json":
        body = await read_body(request, hub.config.max_request_bytes)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidInput("the body is not valid JSON") from None
        if isinstance(payload, list):
            return [_event_from_json(item) for item in payload], True
        return [_event_from_json(payload)], False
    if media in ("text/plain", ""):
        body = await read_body(request, hub.config.max_event_bytes)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise InvalidInput("a text/plain body must be UTF-8") from None
        return [NewEvent(request.query_params.get("event", "message"), text)], False
    raise UnsupportedMediaType(f"publish with Content-Type application/json or text/plain, not {media!r}")


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise InvalidInput("Idempotency-Key must be 1-200 printable characters")
    return key


# -- the app -------------------------------------------------------------------------------------------------


class SubscribeResponse:
    """Holds a subscription for exactly as long as its response streams (topics and runs alike)."""

    def __init__(self, hub: Hub, topic: str, after: int | None, headers: dict[str, str] | None = None) -> None:
        self.hub, self.topic, self.after, self.headers = hub, topic, after, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.hub.subscription(self.topic, self.after) as sub:
            if sub.finished:
                # 204 tells EventSource to stop reconnecting: there is nothing more, ever.
                await Response(status_code=204, headers=self.headers)(scope, receive, send)
                return
            stream = EventStreamResponse(sub.chunks(), retry_ms=self.hub.config.retry_ms, headers=self.headers)
            await stream(scope, receive, send)


def request_cursor(request: Request) -> int | None:
    """The cursor a subscriber asks for: `Last-Event-ID`, else `?after=`, else None."""
    header = parse_cursor(request.headers.get("last-event-id"), "Last-Event-ID")
    # A reconnecting EventSource sends Last-Event-ID but keeps the original ?after=: the header is newer.
    return header if header is not None else parse_cursor(request.query_params.get("after"), "after")


def create_app(hub: Hub, *, extra_routes: list[BaseRoute] | None = None, manage_hub: bool = True) -> Starlette:
    """The HTTP interface of `hub`. With `manage_hub`, the app's lifespan starts and stops the hub."""
    from .agents import agent_routes  # it builds on this module's helpers

    config = hub.config

    def authorised(request: Request) -> None:
        if config.token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.token}".encode()):
            raise Unauthorized("this hub needs Authorization: Bearer <token> to change topics")

    def topic_of(request: Request) -> str:
        return validate_topic(request.path_params["topic"])

    async def publish(request: Request) -> Response:
        authorised(request)
        topic = topic_of(request)
        events, _ = await parse_events(request, hub)
        ids = await hub.publish_many(topic, events, idempotency_key=idempotency_key(request))
        return JSONResponse({"ids": ids})

    async def events(request: Request) -> Response:
        topic = topic_of(request)
        after = request_cursor(request)
        accept = request.headers.get("accept", "")
        if "application/json" in accept and "text/event-stream" not in accept:
            return await page(topic, after, request)
        return SubscribeResponse(hub, topic, after)  # type: ignore[return-value]

    async def page(topic: str, after: int | None, request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"), 100, config.page_size)
        cursor = after or 0
        result = await hub.store.read(topic, cursor, limit)
        if result is None:
            await hub.info(topic)  # raises TopicNotFound
            raise AssertionError("unreachable")
        if cursor > result.last_id:
            raise InvalidCursor(f"after={cursor} is beyond the last id {result.last_id} of topic {topic!r}")
        return JSONResponse(
            {
                "topic": topic,
                "events": [e.as_dict() for e in result.events],
                "first_id": result.first_id,
                "last_id": result.last_id,
                "status": result.status,
                "reset": result.first_id > cursor + 1,
                "next_after": result.events[-1].id if result.events else cursor,
            }
        )

    async def info(request: Request) -> Response:
        topic = topic_of(request)
        return JSONResponse((await hub.info(topic)).as_dict(hub.subscribers(topic)))

    async def close(request: Request) -> Response:
        authorised(request)
        topic = topic_of(request)
        status = "completed"
        body = await read_body(request, 64 * 1024)
        if body.strip():
            try:
                payload = json.loads(body)
            except ValueError:
                raise InvalidInput("the body is not valid JSON") from None
            if not isinstance(payload, dict) or not isinstance(payload.get("status", status), str):
                raise InvalidInput('close takes {"status": "completed" | "failed" | "cancelled"}')
            status = payload.get("status", status)
        closed = await hub.close_topic(topic, status)
        return JSONResponse(closed.as_dict(hub.subscribers(topic)))

    async def delete(request: Request) -> Response:
        authorised(request)
        topic = topic_of(request)
        await hub.delete_topic(topic)
        return JSONResponse({"deleted": topic})

    async def list_topics(request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        after = request.query_params.get("after", "")
        if len(prefix) > 200 or len(after) > 200:
            raise InvalidInput("prefix and after are at most 200 characters")
        limit = parse_limit(request.query_params.get("limit"), 100, 1000)
        found = await hub.topics(prefix, after, limit)
        return JSONResponse(
            {
                "topics": [t.as_dict(hub.subscribers(t.name)) for t in found],
                "next_after": found[-1].name if len(found) == limit else None,
            }
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "draining" if hub.draining else "ok"}, status_code=503 if hub.draining else 200)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not manage_hub:
            yield
            return
        await hub.start()
        try:
            yield
        finally:
            await hub.aclose()

    routes: list[BaseRoute] = [
        Route("/topics/{topic:path}/events", publish, methods=["POST"]),
        Route("/topics/{topic:path}/events", events, methods=["GET"]),
        Route("/topics/{topic:path}/close", close, methods=["POST"]),
        Route("/topics", list_topics, methods=["GET"]),
        Route("/topics/{topic:path}", info, methods=["GET"]),
        Route("/topics/{topic:path}", delete, methods=["DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        *agent_routes(hub),
        *client_routes(),
        *metrics_routes(hub),
        *(extra_routes or []),
    ]
    middleware = []
    if config.durable_prefix is not None:
        from .durable_http import DurableStreams

        middleware.append(
            Middleware(
                DurableStreams, hub=hub, prefix=config.durable_prefix, long_poll_timeout=config.long_poll_timeout
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={SSEHubError: _ssehub_error, HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.hub = hub
    return app
