"""Every error ssehub raises derives from one root, so callers can catch them all.

    SSEHubError
    ├── InvalidInput            bad input from a caller: a 4xx, nothing written
    │   ├── InvalidTopic        a topic name outside [A-Za-z0-9._:/-]{1,200}
    │   ├── InvalidCursor       a Last-Event-ID / ?after= that is not a non-negative integer
    │   ├── EventTooLarge       an event (or a batch) above the configured limit
    │   ├── IdempotencyConflict an Idempotency-Key reused with a different payload (422)
    │   └── UnsupportedMediaType
    ├── TopicNotFound           the topic (or run) does not exist
    ├── TopicClosed             publishing to a topic that was closed
    ├── Conflict                the request contradicts the resource's state (Durable Streams: a 409)
    ├── Gone                    the resource is gone for good, or the history asked for is (a 410)
    ├── Unauthorized            missing or wrong credentials (401)
    │   ├── TokenExpired        the token was valid and has expired: get a fresh one
    │   └── Forbidden           valid credentials that do not allow this (403)
    ├── TooManyRequests         a limit on concurrent work was reached
    │   └── TopicFull           a topic has as many subscribers as it takes (--max-subscribers-per-topic)
    ├── Overloaded              this process has as many subscribers as it takes (503, Retry-After)
    ├── TooManyTopics           creating a topic beyond --max-topics (507); existing topics still work
    ├── StoreUnavailable        the store cannot be reached now; retry later
    ├── AgentError              an agent ends its run with a message meant for the client
    ├── UpstreamError           an upstream service (e.g. an LLM API) failed or answered badly
    ├── TransportError          (client side) the server could not be reached
    └── ServerError             (client side) the server failed, or answered something that is not ssehub

`status` and `code` on each class are what the HTTP layer answers with, so the
mapping from error to response lives next to the error and not in a table that
can drift.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "Conflict",
    "Gone",
    "UpstreamError",
    "EventTooLarge",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidCursor",
    "InvalidInput",
    "InvalidTopic",
    "SSEHubError",
    "ServerError",
    "StoreUnavailable",
    "TokenExpired",
    "TooManyRequests",
    "TooManyTopics",
    "TopicFull",
    "Overloaded",
    "TopicClosed",
    "TopicNotFound",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
]


class SSEHubError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class InvalidInput(SSEHubError, ValueError):
    """The request is malformed."""

    status = 400
    code = "invalid_input"


class InvalidTopic(InvalidInput):
    """Topic names are 1-200 characters of A-Z a-z 0-9 . _ : / -"""

    code = "invalid_topic"


class InvalidCursor(InvalidInput):
    """Last-Event-ID and ?after= must be non-negative integers."""

    code = "invalid_cursor"


class EventTooLarge(InvalidInput):
    """The event is larger than the configured limit."""

    status = 413
    code = "event_too_large"


class IdempotencyConflict(InvalidInput):
    """This Idempotency-Key was used before with a different payload; nothing was written."""

    status = 422
    code = "idempotency_conflict"


class UnsupportedMediaType(InvalidInput):
    """Publish with application/json or text/plain."""

    status = 415
    code = "unsupported_media_type"


class TopicNotFound(SSEHubError, LookupError):
    """No such topic."""

    status = 404
    code = "not_found"


class TopicClosed(SSEHubError):
    """The topic is closed; nothing more can be published to it."""

    status = 409
    code = "topic_closed"


class Conflict(SSEHubError):
    """The request contradicts the current state of the resource."""

    status = 409
    code = "conflict"


class Gone(SSEHubError):
    """The resource, or the part of it asked for, is gone for good."""

    status = 410
    code = "gone"


class Unauthorized(SSEHubError):
    """Missing or invalid credentials."""

    status = 401
    code = "unauthorized"


class TokenExpired(Unauthorized):
    """The token has expired; a client that can get a fresh one retries with it."""

    code = "token_expired"


class Forbidden(Unauthorized):
    """The credentials are not allowed to do this."""

    status = 403
    code = "forbidden"


class TooManyRequests(SSEHubError):
    """Too many concurrent requests; try again later."""

    status = 429
    code = "too_many_requests"


class TopicFull(TooManyRequests):
    """This topic has as many subscribers as it takes; try again later."""

    code = "too_many_subscribers"


class Overloaded(SSEHubError):
    """The server has as many subscribers as it takes; try again later, or another node."""

    status = 503
    code = "too_many_subscribers"


class TooManyTopics(SSEHubError):
    """The hub holds as many topics as it may; publish to an existing topic, or wait for old ones to expire."""

    status = 507
    code = "too_many_topics"


class StoreUnavailable(SSEHubError):
    """The store cannot be reached right now; nothing was written. Retry later."""

    status = 503
    code = "store_unavailable"


class TransportError(SSEHubError):
    """The server could not be reached."""

    status = 503
    code = "transport_error"


class AgentError(SSEHubError):
    """The agent failed."""

    status = 500
    code = "agent_error"


class UpstreamError(SSEHubError):
    """An upstream service failed or answered with something we cannot read."""

    status = 502
    code = "upstream_error"


class ServerError(SSEHubError):
    """The server failed, or its answer was not what an ssehub server sends."""

    status = 502
    code = "server_error"
