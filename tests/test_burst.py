"""A reconnect storm on the Redis store: thousands of subscribers connecting at once all get 200.

5,000 subscribers connect at once to 2,500 topics of one `ssehub serve --workers 2`,
then the server is stopped with SIGTERM (every stream ends with a `retry:` hint)
and started again, and all of them reconnect at once with their Last-Event-ID.
Every answer must be a 200: a plain EventSource gives up for good on a 503.

The clients are raw asyncio streams (an HTTP/1.1 request and the response's
first bytes), far cheaper than an HTTP client library per connection on 2 cores.
"""

from __future__ import annotations

import asyncio
import collections
import random
import resource
import time
from collections.abc import Callable

import pytest

from ssehub import NewEvent
from ssehub.stores import open_store
from support import ServerProcess, redis_prefix

pytestmark = [pytest.mark.redis, pytest.mark.slow]

Start = Callable[..., ServerProcess]

SUBSCRIBERS = 5000
TOPICS = 2500


class Subscriber:
    """One SSE subscriber on a raw connection: connects, reads the status, then waits for an event id."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.last_event_id: str | None = None
        self.statuses: list[int] = []
        self.refused = 0  # connection attempts while the server was down
        self.refusal = ""  # the body of an answer that was not a 200
        self.writer: asyncio.StreamWriter | None = None
        self.reader: asyncio.StreamReader | None = None

    async def connect(self, *, until_id: str | None) -> None:
        """Connect (retrying while nothing listens), read the status, and with `until_id` read until that id."""
        while True:
            try:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                break
            except OSError:
                self.refused += 1
                await asyncio.sleep(0.05 + random.random() * 0.2)
        resume = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id else ""
        self.writer.write(
            f"GET /topics/{self.topic}/events?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Accept: text/event-stream\r\n{resume}\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        self.statuses.append(status)
        if status != 200:
            self.refusal = (await self.reader.read(400)).decode(errors="replace")
            await self.close()
            return
        if until_id is not None:
            seen = b""
            while f"id: {until_id}\n".encode() not in seen:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise AssertionError(f"{self.topic}: the stream ended before id {until_id}")
                seen += chunk
            self.last_event_id = until_id

    async def until_closed(self) -> bytes:
        """Read until the server ends the response (on SIGTERM); returns the last bytes."""
        if self.writer is None or self.reader is None:
            return b""  # refused, so never open
        tail = b""
        while chunk := await self.reader.read(65536):
            tail = (tail + chunk)[-200:]
        await self.close()
        return tail

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"this test needs {needed} open files; ulimit -n allows {hard} (raise it with ulimit -n)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_5000_subscribers_at_once_and_again_after_sigterm_all_get_200(server: Start, redis_url: str) -> None:
    raise_fd_limit(SUBSCRIBERS * 2 + 1000)
    with redis_prefix(redis_url) as prefix:
        store_url = f"{redis_url}?prefix={prefix}"
        store = open_store(store_url)
        await store.start()
        try:
            for start in range(0, TOPICS, 50):
                await asyncio.gather(
                    *(store.append(f"burst/{i}", [NewEvent("n", str(i))]) for i in range(start, start + 50))
                )
        finally:
            await store.aclose()

        node = server("--store", store_url, "--workers", "2", "--heartbeat", "30")
        subscribers = [Subscriber(node.port, f"burst/{i % TOPICS}") for i in range(SUBSCRIBERS)]
        try:
            # All at once, each to the point where it has read its topic's event.
            began = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(s.connect(until_id="1") for s in subscribers)), 120)
            first = collections.Counter(s.statuses[0] for s in subscribers)
            print(f"\nfirst burst: {dict(first)} in {time.monotonic() - began:.1f}s")
            print(collections.Counter(s.refusal[-160:] for s in subscribers if s.refusal).most_common(3))

            # SIGTERM: every stream ends with a retry: hint; the server exits and starts again on its port.
            assert node.proc is not None
            closing = asyncio.gather(*(s.until_closed() for s in subscribers))
            node.proc.terminate()
            tails = await asyncio.wait_for(closing, 60)
            assert all(b"retry: " in tail for tail, s in zip(tails, subscribers, strict=True) if s.statuses[0] == 200)
            await asyncio.to_thread(node.proc.wait, 30)
            began = time.monotonic()
            restart = asyncio.create_task(asyncio.to_thread(node.start, 60))
            # Every client reconnects at once, with its Last-Event-ID, while the server comes back.
            await asyncio.wait_for(asyncio.gather(*(s.connect(until_id=None) for s in subscribers)), 120)
            await restart
            again = collections.Counter(s.statuses[1] for s in subscribers)
            print(
                f"after SIGTERM and restart: {dict(again)} in {time.monotonic() - began:.1f}s "
                f"(connection attempts refused while it restarted: {sum(s.refused for s in subscribers)})"
            )
            assert first == {200: SUBSCRIBERS}
            assert again == {200: SUBSCRIBERS}
        finally:
            await asyncio.gather(*(s.close() for s in subscribers), return_exceptions=True)
