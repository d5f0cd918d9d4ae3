"""Settings shared by the hub, the HTTP app and `ssehub serve`."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["DEFAULT_URL", "HubConfig"]

#: Where `ssehub serve` listens by default, so where the client and the CLI look by default.
DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class HubConfig:
    #: Largest event (data plus name), in bytes.
    max_event_bytes: int = 1024 * 1024
    #: Largest request body accepted by a publish, in bytes.
    max_request_bytes: int = 8 * 1024 * 1024
    #: Most events in one atomic batch.
    max_batch: int = 1000
    #: Frames kept in memory per active topic; older ones are read from the store.
    tail_window: int = 2048
    #: Events read from the store per step of a replay.
    page_size: int = 1000
    #: Seconds without an event before a heartbeat comment.
    heartbeat: float = 15.0
    #: The reconnection delay suggested to clients, in milliseconds.
    retry_ms: int = 2000
    #: Seconds between retention sweeps (closed topics past their time to live).
    purge_interval: float = 60.0
    #: When set, publishing, closing and deleting need `Authorization: Bearer <token>`.
    token: str | None = None
    #: Seconds a stopping hub lets its running agent runs finish before it cancels them. Their drained
    #: clients reconnect (to the restarted server, or another node) and read the rest from the log.
    run_grace: float = 0.0
    #: Where the Durable Streams protocol is served (`{prefix}/{topic}`); None: not served.
    durable_prefix: str | None = "/v1/stream"
    #: Seconds a Durable Streams long-poll waits for data before it answers 204.
    long_poll_timeout: float = 15.0
    #: Streaming ingest (NDJSON publishes): the most bytes one streamed request may carry.
    max_stream_bytes: int = 64 * 1024 * 1024
    #: Streaming ingest: seconds a stream may go without finishing a line before it is answered 408.
    stream_idle_timeout: float = 300.0
    #: Subscriptions this hub holds at once (0: no cap); one more gets Overloaded (503, Retry-After).
    max_subscribers: int = 0
    #: Subscriptions of one topic at once (0: no cap); one more gets TopicFull (429, Retry-After).
    max_subscribers_per_topic: int = 0
    # Input bounds
    #: Largest result of an agent run, as JSON, in bytes: a run whose agent returns more fails, said aloud.
    max_result_bytes: int = 256 * 1024
    #: Largest metadata a run is started with (e.g. the ids of an AG-UI client), as JSON, in bytes.
    max_meta_bytes: int = 16 * 1024
    # Delivery bounds: what the hub holds in memory is bounded in bytes (the formula: docs/security.md).
    #: Bytes of recent events kept in memory per active topic (frames and events); older ones come from the store.
    tail_bytes: int = 4 * 1024 * 1024
    #: Bytes of all the topics' tails together; above it, the largest tails are trimmed first.
    tail_total_bytes: int = 256 * 1024 * 1024
    #: Bytes of events read or written to one subscriber in one step (always at least one event).
    page_bytes: int = 1024 * 1024
    #: Seconds a subscriber's socket may take to take the last write before the stream is cut (it resumes later).
    stall_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "max_event_bytes",
            "max_request_bytes",
            "max_batch",
            "tail_window",
            "page_size",
            "retry_ms",
            "max_result_bytes",
            "max_meta_bytes",
            "tail_bytes",
            "tail_total_bytes",
            "page_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_subscribers < 0 or self.max_subscribers_per_topic < 0:
            raise ValueError("max_subscribers and max_subscribers_per_topic must not be negative")
        if self.heartbeat <= 0 or self.purge_interval <= 0:
            raise ValueError("heartbeat and purge_interval must be positive")
        if self.stall_timeout <= 0:
            raise ValueError("stall_timeout must be positive")
        if not 0 <= self.run_grace <= 3600:
            raise ValueError("run_grace must be from 0 to 3600 seconds")
        if not 0 < self.long_poll_timeout <= 300:
            raise ValueError("long_poll_timeout must be above 0 and at most 300 seconds")
        if self.max_stream_bytes < 1 or not 0 < self.stream_idle_timeout <= 86_400:
            raise ValueError("max_stream_bytes must be at least 1, stream_idle_timeout above 0 and at most 86400")
        if self.durable_prefix is not None and not (
            self.durable_prefix.startswith("/")
            and len(self.durable_prefix) > 1
            and not self.durable_prefix.endswith("/")
        ):
            raise ValueError("durable_prefix must look like /v1/stream")

    @property
    def tick(self) -> float:
        """Seconds between the hub's wake-ups of idle subscribers (heartbeats, expiry, stalls)."""
        return min(self.heartbeat, self.stall_timeout) / 4

    @property
    def quiet(self) -> float:
        """Seconds of silence after which a subscriber woken by the tick sends a keep-alive: a tick
        earlier than `heartbeat`, so that no silence lasts longer than `heartbeat` itself."""
        return max(self.heartbeat - self.tick, 0.0)

    def retry_hint(self) -> int:
        """The `retry:` of a stream the server ends (draining, the store away): `retry_ms` times a random
        factor from 1 to 2, so that the clients of a stopping server do not all come back at once."""
        return int(self.retry_ms * random.uniform(1.0, 2.0))
