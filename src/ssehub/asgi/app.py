"""`create_app(hub)`: the HTTP interface of a hub, an ASGI app that can be mounted under any prefix.

    /topics...                 topics.py       publish, subscribe, info, close, delete, list
    /agents..., /runs/...      agents.py       agent runs
    /chat/..., /ag-ui/...      chat.py         runs for useChat (the AI SDK) and AG-UI clients
    /healthz                   here            liveness (503 while draining)
    /readyz                    here            readiness: 503 while draining or while the store does not answer
    /metrics                   metrics.py      Prometheus text format
    /v1/stream/...             durable.py      the Durable Streams protocol (HubConfig.durable_prefix)
    /_ssehub/...               static.py       the browser client and the demo's files

Every error is JSON `{"error": {"code", "message"}}` with a 4xx/5xx status (errors.py).

Access control (auth.py): before anything else, every HTTP request is screened
(the Host allow-list, CORS preflights, the Origin of state-changing requests), and
answers to an allowed cross-origin caller get CORS headers; then each endpoint
checks the caller's rights with one call, `access.require`. `/healthz`, `/readyz` and the
static files need no credentials.

The two hot endpoints, publishing to a topic and subscribing to it, are what
every token and every reader takes. `HubApp` recognises their paths with two
string tests and calls them directly, without Starlette's router and middleware
stack; everything else is a plain Starlette app behind it, whose state (`.state`)
and lifespan are the app's.

Under `ssehub serve`, a publish goes one step further: the connection asks the app's
`shortcut` for the publish's whole answer and writes it itself, without uvicorn's ASGI cycle
(`ssehub.connections.Shortcut`). Mounted elsewhere, the same answer goes through `send`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..access import Policy
from ..exceptions import StoreUnavailable
from ..hub import Hub
from .access import log_access, log_request
from .agents import agent_routes
from .auth import Access
from .chat import chat_routes
from .errors import EXCEPTION_HANDLERS, response_for
from .metrics import metrics_routes
from .requests import OFFLOAD_KEY, Offload
from .responses import Answer
from .static import client_routes
from .subscriptions import SubscriptionResponse
from .topics import TopicEndpoints

__all__ = ["HubApp", "create_app"]

_PREFIX, _SUFFIX = "/topics/", "/events"
_JSON = (b"content-type", b"application/json")
_HOT = ("POST", "GET", "HEAD")


def _route_path(scope: Scope) -> str:
    # Mounted under a prefix, `path` is the full path and `root_path` the prefix (the ASGI convention
    # Starlette's own routing follows).
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _events_topic(scope: Scope) -> str | None:
    """The topic of a request for `/topics/{topic}/events`, with two string tests (the topic is checked later)."""
    path = _route_path(scope)
    if path.startswith(_PREFIX) and path.endswith(_SUFFIX) and len(path) > len(_PREFIX) + len(_SUFFIX):
        return path[len(_PREFIX) : -len(_SUFFIX)]
    return None


class HubApp:
    """The ASGI app of a hub: the hot topic endpoints first, then the Starlette app `router`."""

    def __init__(
        self,
        hub: Hub,
        router: Starlette,
        topics: TopicEndpoints,
        access: Access,
        access_log: bool = False,
        offload: Offload | None = None,
    ) -> None:
        self.hub = hub
        #: Parses the large bodies off the event loop (see requests.py); the lifespan stops its workers.
        self.offload = offload or Offload()
        self.router = router
        self.topics = topics
        self.access = access
        self.state = router.state
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            topic = _events_topic(scope)
            # Publishing (a request per token) and subscribing (a task per reader, for as long as it reads): screened
            # like every request, then handled here, their access lines written without wrapping `send`. A refusal
            # takes the common path below, which answers it.
            if topic is not None and method in _HOT and self.access.screen(scope) is None:
                if method == "POST":
                    status, headers, body = await self._publish(scope, receive, topic)
                    await send({"type": "http.response.start", "status": status, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                else:
                    await self._subscribe(scope, receive, self.access.cors(scope, send), topic)
                return
        if self.access_log and scope["type"] == "http":
            await log_access(self._dispatch, scope, receive, send)
        else:
            await self._dispatch(scope, receive, send)

    def shortcut(self, scope: Scope, receive: Receive) -> Coroutine[Any, Any, Answer] | None:
        """A publish's answer, for `ssehub serve`'s connections to write whole without the ASGI cycle (see
        `ssehub.connections.Shortcut`); None for any other request, or one the screen refuses."""
        if scope["method"] != "POST":
            return None
        topic = _events_topic(scope)
        if topic is None or self.access.screen(scope) is not None:
            return None
        return self._publish(scope, receive, topic)

    async def _publish(self, scope: Scope, receive: Receive, topic: str) -> Answer:
        """The whole answer of a publish (every kind of body is answered whole, a stream's once it has ended)."""
        started = time.perf_counter()
        status, body = 0, b""
        scope[OFFLOAD_KEY] = self.offload
        try:
            try:
                answer = await self.topics.publish(scope, receive, topic)
            except Exception as exc:
                answer = response_for(exc, "POST", scope["path"])
            if isinstance(answer, bytes):
                status, body = 200, answer
                headers = [(b"content-length", b"%d" % len(body)), _JSON]
            else:  # an error, or the report of a streamed publish
                status, body, headers = answer.status_code, bytes(answer.body), answer.raw_headers
            cors = self.access.cors_headers(scope)
            return status, headers + cors if cors else headers, body
        finally:
            if self.access_log:
                log_request(scope, status, len(body) if status else 0, started)

    async def _subscribe(self, scope: Scope, receive: Receive, send: Send, topic: str) -> None:
        started = time.perf_counter()
        response: Response | None = None
        try:
            try:
                response = await self.topics.events(Request(scope, receive), topic)
            except Exception as exc:
                response = response_for(exc, scope["method"], scope["path"])
            await response(scope, receive, send)
        finally:
            if self.access_log:
                if isinstance(response, SubscriptionResponse):
                    status, sent = response.answered, response.sent
                elif response is not None:  # an error, a HEAD, a JSON page: answered whole
                    status, sent = response.status_code, len(response.body)
                else:
                    status, sent = 0, 0
                log_request(scope, status, sent, started)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.access.screen(scope)
            if refused is not None:
                await refused(scope, receive, send)
                return
            send = self.access.cors(scope, send)
            scope[OFFLOAD_KEY] = self.offload
        await self.router(scope, receive, send)


def create_app(
    hub: Hub,
    *,
    access: Access | None = None,
    extra_routes: list[BaseRoute] | None = None,
    manage_hub: bool = True,
    access_log: bool = False,
) -> HubApp:
    """The HTTP interface of `hub`. With `manage_hub`, the app's lifespan starts and stops the hub. With
    `access_log`, every request and stream writes one line to the logger `ssehub.access` (see `access.py`).

    `access` says who may do what (`ssehub.asgi.auth.Access`); without it, only `HubConfig.token`
    (a single API key named `token`), if set, is needed, for every endpoint.
    """
    if access is None:
        access = Access(Policy({"token": hub.config.token} if hub.config.token else None))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "draining" if hub.draining else "ok"}, status_code=503 if hub.draining else 200)

    async def readyz(request: Request) -> Response:
        # Whether to send traffic here: not while draining, not while the store is away.
        if hub.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        try:
            await hub.check_store()
        except StoreUnavailable as exc:
            return JSONResponse({"status": "store_unavailable", "message": exc.message}, status_code=503)
        return JSONResponse({"status": "ready"})

    offload = Offload()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if not manage_hub:
                yield
                return
            async with hub.lifespan(app):
                yield
        finally:
            offload.close()

    topics = TopicEndpoints(hub, access)
    routes: list[BaseRoute] = [
        *topics.routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *agent_routes(hub, access),
        *chat_routes(hub, access),
        *client_routes(),
        *metrics_routes(hub, access),
        *(extra_routes or []),
    ]
    middleware = []
    prefix = hub.config.durable_prefix
    if prefix is not None:
        from .durable import DurableStreams

        timeout = hub.config.long_poll_timeout
        middleware.append(Middleware(DurableStreams, hub=hub, access=access, prefix=prefix, long_poll_timeout=timeout))
    router = Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    router.state.hub = hub
    router.state.access = access
    return HubApp(hub, router, topics, access, access_log, offload)
