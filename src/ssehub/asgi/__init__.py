"""The HTTP layer: `create_app(hub)` builds the ASGI app of a hub (see `app.py` for its map).

    app = create_app(hub)                     # uvicorn module:app; its lifespan starts and stops the hub
    api.mount("/sse", create_app(hub))        # inside FastAPI or Starlette: FastAPI(lifespan=hub.lifespan)

Modules, each importing only those above it in this list:

    app.py            create_app, HubApp: the hot topic endpoints, then the router
    topics.py         topic endpoints          agents.py     agent and run endpoints
    chat.py           useChat and AG-UI endpoints
    metrics.py        GET /metrics             static.py     the browser client and the demo page
    subscriptions.py  the response that streams a topic to a subscriber
    requests.py       parsing requests         errors.py     exceptions to JSON errors
    auth.py           credentials, the Host / Origin / CORS checks, `Access.require` (see docs/security.md)
    responses.py      EventSourceResponse, JSON errors
"""

from __future__ import annotations

from .app import HubApp, create_app
from .auth import Access
from .responses import EventSourceResponse, EventStream

__all__ = ["Access", "EventSourceResponse", "EventStream", "HubApp", "create_app"]
