"""ssehub: durable, resumable Server-Sent Events for AI agents and LLM apps."""

from __future__ import annotations

__version__ = "0.1.0"

from .client import AsyncClient, Client, TopicState
from .config import HubConfig
from .events import Event, NewEvent, TopicInfo
from .exceptions import (
    AgentError,
    Conflict,
    EventTooLarge,
    Forbidden,
    Gone,
    InvalidCursor,
    InvalidInput,
    InvalidTopic,
    ServerError,
    SSEHubError,
    StoreUnavailable,
    TooManyRequests,
    TopicClosed,
    TopicNotFound,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
)
from .hub import Hub, Subscription, TopicWriter
from .responses import EventStreamResponse
from .runs import Agent, Run, ToolCall, current_run, emit
from .sse import Decoder, ServerSentEvent
from .stores import MemoryStore, SQLiteStore, Store, open_store
from .streaming import EventSourceResponse, EventStream

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
    "EventStreamResponse",
    "EventTooLarge",
    "Forbidden",
    "Gone",
    "Hub",
    "HubConfig",
    "InvalidCursor",
    "InvalidInput",
    "InvalidTopic",
    "MemoryStore",
    "NewEvent",
    "Run",
    "SQLiteStore",
    "SSEHubError",
    "ServerError",
    "ServerSentEvent",
    "Store",
    "StoreUnavailable",
    "Subscription",
    "TooManyRequests",
    "ToolCall",
    "TopicClosed",
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
