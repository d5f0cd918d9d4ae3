"""The response that streams a topic to one subscriber: topics and runs alike."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..exceptions import SSEHubError
from ..hub import Hub, Subscription
from .access import STREAM_KEY
from .errors import response_for
from .responses import EventSourceResponse

__all__ = ["SubscriptionResponse"]


class SubscriptionResponse(Response):
    """Holds a subscription for exactly as long as its response streams.

    A reconnect at the end of a topic that has ended answers `204 No Content`,
    which tells EventSource to stop reconnecting: there is nothing more, ever.
    """

    def __init__(self, hub: Hub, topic: str, after: int | None, headers: Mapping[str, str] | None = None) -> None:
        # Response.__init__ is not called: the status and body are decided once the subscription is held.
        self.hub, self.topic, self.after, self.headers_given = hub, topic, after, headers
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub: Subscription | None = None
        try:
            async with self.hub.subscription(self.topic, self.after) as sub:
                scope[STREAM_KEY] = sub  # for the access log
                if sub.finished:
                    await Response(status_code=204, headers=self.headers_given)(scope, receive, send)
                    return
                # No heartbeat of the response's own: the hub sends keep-alives from one clock for every stream.
                stream = EventSourceResponse(
                    sub.chunks(), heartbeat=None, retry_ms=self.hub.config.retry_ms, headers=self.headers_given
                )
                await stream(scope, receive, send)
        except SSEHubError as exc:
            if sub is not None:
                raise  # the answer has begun: too late for an error status
            # E.g. the store is unreachable: nothing has been sent yet, so say so, as any other endpoint would.
            await response_for(exc, scope["method"], scope["path"])(scope, receive, send)
