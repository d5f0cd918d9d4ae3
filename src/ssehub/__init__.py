"""ssehub: durable, resumable Server-Sent Events for AI agents and LLM apps.

`import ssehub` loads only the standard library and the hub itself: the names that
need a third-party package are imported the first time they are used, so a script
that only publishes from agent code never loads the HTTP stack or the HTTP client.

    the hub, agents, stores and events   ssehub.Hub, ssehub.emit, ssehub.Run, ...   (no dependencies)
    the HTTP interface                   ssehub.asgi.create_app(hub)               (Starlette)
    the Python client                    ssehub.AsyncClient, ssehub.Client          (httpx)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import HubConfig
from .events import Event, NewEvent, TopicInfo
from .exceptions import (
    AgentError,
    Conflict,
    EventTooLarge,
    Forbidden,
    Gone,
    IdempotencyConflict,
    InvalidCursor,
    InvalidInput,
    InvalidTopic,
    Overloaded,
    ServerError,
    SSEHubError,
    StoreUnavailable,
    TokenExpired,
    TooManyRequests,
    TooManyTopics,
    TopicClosed,
    TopicFull,
    TopicNotFound,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
)
from .hub import Hub, Subscription, TopicWriter
from .runs import Agent, Run, ToolCall, current_run, emit
from .sse import Decoder, ServerSentEvent
from .stores import MemoryStore, SQLiteStore, Store, open_store

if TYPE_CHECKING:
    from .asgi.responses import EventSourceResponse, EventStream
    from .client import AsyncClient, Client, TopicState

__all__ = [
    "Agent",
    "AgentError",
    "AsyncClient",
    "Client",
    "Conflict",
    "Decoder",
    "Event",
    "EventSourceResponse",
    "EventStream",
    "EventTooLarge",
    "Forbidden",
    "Gone",
    "Hub",
    "HubConfig",
    "IdempotencyConflict",
    "InvalidCursor",
    "InvalidInput",
    "InvalidTopic",
    "MemoryStore",
    "NewEvent",
    "Overloaded",
    "Run",
    "SQLiteStore",
    "SSEHubError",
    "ServerError",
    "ServerSentEvent",
    "Store",
    "StoreUnavailable",
    "Subscription",
    "TokenExpired",
    "TooManyRequests",
    "TooManyTopics",
    "ToolCall",
    "TopicClosed",
    "TopicFull",
    "TopicInfo",
    "TopicNotFound",
    "TopicState",
    "TopicWriter",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamError",
    "__version__",
    "current_run",
    "emit",
    "open_store",
]

# name -> the module that defines it, imported on first use (PEP 562).
_LAZY = {
    "AsyncClient": "ssehub.client",
    "Client": "ssehub.client",
    "TopicState": "ssehub.client",
    "EventSourceResponse": "ssehub.asgi.responses",
    "EventStream": "ssehub.asgi.responses",
    "EventStreamResponse": "ssehub.asgi.responses",
}
# Kept for one release; each use warns (so they are never cached here).
_DEPRECATED = frozenset({"EventStreamResponse"})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ssehub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if name not in _DEPRECATED:
        globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
