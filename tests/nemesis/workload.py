"""The clients of a run, each recording what it did and what it was told.

- `Publisher`: the Python client (`ssehub.AsyncClient`) publishing single events and atomic
  batches, one idempotency key per call, retried (same key) until acknowledged or given up; and
  now and then a streamed publish (`AsyncClient.stream`, NDJSON) of a few lines written slowly,
  so that faults land while it is open, sent again whole (same key) until acknowledged.
- `PythonReader`: `AsyncClient.subscribe`, resumable by itself; it can be told to stop
  reading for a while (its socket fills, the hub behind it is pushed back on).
- `RunStarter`: starts runs of the demo agent with `POST /agents/chat` (an idempotency key,
  `Prefer: respond-async`), sometimes repeats the call on purpose, sometimes cancels the run;
  each run is read by reconnecting readers that the harness attaches.
- `Recorder`: the httpx transport under every client: it notes each 5xx answer and when each
  event stream opened and closed, below the client's own retries, which would hide them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import httpx

import ssehub
from ssehub import SSEHubError

from .history import Answer, Clock, Delivery, Publish, Reader, Run, payload_of

__all__ = ["Publisher", "PythonReader", "Recorder", "RunStarter", "publish_mid_body"]

# Short client timeouts: a paused hub should look dead within seconds, so clients move on (to
# another node, through the proxy) and their retries reach the hub while it is still paused.
CLIENT_OPTIONS: dict[str, Any] = {
    "timeout": 3.0,
    "read_timeout": 4.0,
    "retries": 2,
    "retry_delay": 0.1,
    "max_delay": 1.0,
}


class _Watched(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, closed: Callable[[], None]) -> None:
        self.inner, self.closed = inner, closed

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self.inner:
                yield chunk
        finally:
            self.closed()

    async def aclose(self) -> None:
        self.closed()
        await self.inner.aclose()


class Recorder(httpx.AsyncBaseTransport):
    def __init__(self, client: str, clock: Clock, answers: list[Answer]) -> None:
        self.client, self.clock, self.answers = client, clock, answers
        self.connections: list[list[float | None]] = []
        self.sent: Counter[str] = Counter()  # requests sent, by idempotency key: retries included
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = self.clock()
        key = request.headers.get("idempotency-key")
        if key is not None:
            self.sent[key] += 1
        response = await self._inner.handle_async_request(request)
        if response.status_code >= 500:
            self.answers.append(
                Answer(self.client, request.method, request.url.path, response.status_code, start, self.clock())
            )
        media = response.headers.get("content-type", "")
        if response.status_code == 200 and media.startswith("text/event-stream"):
            record: list[float | None] = [self.clock(), None]
            self.connections.append(record)

            def closed() -> None:
                if record[1] is None:
                    record[1] = self.clock()

            assert isinstance(response.stream, httpx.AsyncByteStream)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_Watched(response.stream, closed),
                extensions=response.extensions,
            )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class Publisher:
    def __init__(
        self,
        name: str,
        url: str,
        topics: list[str],
        rate: float,
        rng: random.Random,
        clock: Clock,
        answers: list[Answer],
    ) -> None:
        self.name, self.url, self.topics, self.rate, self.rng, self.clock = name, url, topics, rate, rng, clock
        self.answers = answers
        self.publishes: list[Publish] = []
        self._recorder = Recorder(name, clock, answers)

    def _client(self) -> ssehub.AsyncClient:
        return ssehub.AsyncClient(self.url, transport=self._recorder, **CLIENT_OPTIONS)

    async def run(self, stop: asyncio.Event, give_up: Callable[[], float]) -> None:
        """Publish until `stop`; the call in flight then goes on until acknowledged or `give_up()` passes."""
        client = self._client()
        seq = 0
        async with client:
            while not stop.is_set():
                seq += 1
                topic = self.rng.choice(self.topics)
                size = self.rng.choice((1, 1, 1, 1, 1, 1, 1, 2, 3, 5))  # mostly single events, some atomic batches
                batch = self._batch(f"{self.name}.{seq}.{i}" for i in range(size))
                key = f"{self.name}-{seq}"
                # Now and then an impatient caller: the client's own retries, then it gives up. What it
                # sent may or may not be in the log (unacknowledged), but never twice.
                impatient = self.rng.random() < 0.1
                if self.rng.random() < 0.1:
                    lines = self._batch(f"{self.name}.{seq}.{i}" for i in range(self.rng.randint(2, 12)))
                    await self._stream(client, topic, key, lines, give_up)
                    continue
                acked = await self._publish(client, topic, key, batch, give_up, impatient=impatient)
                if acked and self.rng.random() < 0.05:
                    # And a caller whose answer was lost: the same call again, which must answer the same ids.
                    await self._publish(client, topic, key, batch, give_up)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.rng.expovariate(self.rate))

    async def create(self, topics: list[str], give_up: Callable[[], float]) -> None:
        """One event in each topic."""
        client = self._client()
        async with client:
            for i, topic in enumerate(topics):
                await self._publish(client, topic, f"{self.name}-{i}", self._batch([f"{self.name}.{i}.0"]), give_up)

    def _batch(self, payloads: Iterable[str]) -> list[tuple[str, Any]]:
        return [("message", {"k": p, "pad": "x" * self.rng.randint(0, 1500)}) for p in payloads]

    async def _publish(
        self,
        client: ssehub.AsyncClient,
        topic: str,
        key: str,
        batch: list[tuple[str, Any]],
        give_up: Callable[[], float],
        *,
        impatient: bool = False,
    ) -> bool:
        """One publish call, retried with its key until acknowledged; whether it was."""
        start = self.clock()
        ids: tuple[int, ...] | None = None
        payloads = tuple(data["k"] for _, data in batch)
        try:
            while ids is None:
                try:
                    if len(batch) == 1:
                        ids = (await client.publish(topic, *batch[0], idempotency_key=key),)
                    else:
                        ids = tuple(await client.publish_many(topic, batch, idempotency_key=key))
                except SSEHubError:
                    if impatient or self.clock() > give_up():
                        return False
                    await asyncio.sleep(0.2)
            return True
        finally:
            attempts = self._recorder.sent[key]
            self.publishes.append(Publish(self.name, topic, key, payloads, start, self.clock(), ids, attempts))

    async def _stream(
        self,
        client: ssehub.AsyncClient,
        topic: str,
        key: str,
        lines: list[tuple[str, Any]],
        give_up: Callable[[], float],
    ) -> None:
        """One streamed publish, its lines a few tens of ms apart, sent again whole until acknowledged."""
        start = self.clock()
        ids: tuple[int, ...] | None = None
        try:
            while ids is None:
                try:
                    async with client.stream(topic, idempotency_key=key) as stream:
                        for event, data in lines:
                            await stream.send(data, event=event)
                            await asyncio.sleep(self.rng.uniform(0, 0.1))
                    assert stream.result is not None  # a block that ended without an error has one
                    ids = stream.result.ids
                except SSEHubError:
                    if self.clock() > give_up():
                        return
                    await asyncio.sleep(0.2)
        finally:
            payloads = tuple(data["k"] for _, data in lines)
            attempts = self._recorder.sent[key]
            self.publishes.append(Publish(self.name, topic, key, payloads, start, self.clock(), ids, attempts))


class PythonReader:
    def __init__(self, name: str, url: str, topic: str, after: int, clock: Clock, answers: list[Answer]) -> None:
        self.name, self.url, self.topic, self.after, self.clock, self.answers = name, url, topic, after, clock, answers
        self.start = clock()
        self.deliveries: list[Delivery] = []
        self.finished = False
        self.stalled_until = 0.0
        self._recorder = Recorder(name, clock, answers)

    async def run(self) -> None:
        client = ssehub.AsyncClient(self.url, transport=self._recorder, **CLIENT_OPTIONS)
        cursor = self.after
        async with client:
            while True:
                try:
                    async for event in client.subscribe(self.topic, after=cursor):
                        self.deliveries.append(Delivery(event.id, event.event, payload_of(event.data), self.clock()))
                        cursor = event.id
                        if self.stalled_until > self.clock():
                            # Not reading: the connection's buffers fill and the hub has to hold back.
                            await asyncio.sleep(self.stalled_until - self.clock())
                    self.finished = True
                    return
                except SSEHubError:
                    # Only the first connection of a subscribe raises (no hub could be reached): try again.
                    await asyncio.sleep(0.5)

    def stall(self, seconds: float) -> None:
        self.stalled_until = self.clock() + seconds

    def history(self) -> Reader:
        connections = tuple((a or 0.0, b) for a, b in self._recorder.connections)
        return Reader(
            self.name, "python", self.topic, self.after, self.start, tuple(self.deliveries), self.finished, connections
        )


# The events of a demo run, for the node readers (an EventSource needs a listener per event name).
RUN_EVENTS = ["step_start", "step_end", "tool_start", "tool_result", "progress", "text_delta", "message"]
RUN_EVENTS += ["done", "error", "cancelled", "reset"]

Attach = Callable[[str], None]  # called with each new run's id


class RunStarter:
    def __init__(
        self, name: str, url: str, every: float, rng: random.Random, clock: Clock, answers: list[Answer]
    ) -> None:
        self.name, self.url, self.every, self.rng, self.clock, self.answers = name, url, every, rng, clock, answers
        self.runs: list[dict[str, Any]] = []
        self._cancels: list[asyncio.Task[None]] = []

    async def run(self, stop: asyncio.Event, attach: Attach, give_up: Callable[[], float]) -> None:
        async with httpx.AsyncClient(
            base_url=self.url, transport=Recorder(self.name, self.clock, self.answers)
        ) as http:
            n = 0
            while not stop.is_set():
                n += 1
                record: dict[str, Any] = {"key": f"{self.name}-{n}", "answered": [], "start": self.clock()}
                self.runs.append(record)
                body = {"message": f"nemesis run {n} of {self.name}"}
                for _ in range(2 if self.rng.random() < 0.3 else 1):  # now and then, the same call twice
                    run_id = await self._start(http, record["key"], body, give_up)
                    if run_id is None:
                        break
                    record["answered"].append(run_id)
                if record["answered"]:
                    attach(record["answered"][0])
                    if self.rng.random() < 0.2:
                        record["cancel"] = True
                        delay = self.rng.uniform(0.5, 3.0)
                        self._cancels.append(asyncio.create_task(self._cancel(http, record["answered"][0], delay)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.rng.uniform(0.5, 1.5) * self.every)
            await asyncio.gather(*self._cancels, return_exceptions=True)

    async def _start(
        self, http: httpx.AsyncClient, key: str, body: dict[str, Any], give_up: Callable[[], float]
    ) -> str | None:
        headers = {"idempotency-key": key, "prefer": "respond-async"}
        while self.clock() < give_up():
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                response = await http.post("/agents/chat", json=body, headers=headers, timeout=3.0)
                if response.status_code in (200, 202):
                    return str(response.json()["id"])
            await asyncio.sleep(0.3)
        return None

    async def _cancel(self, http: httpx.AsyncClient, run_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        for _ in range(20):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.post(f"/runs/{run_id}/cancel", timeout=3.0)).status_code in (200, 202):
                    return
            await asyncio.sleep(0.3)

    async def settle(self, deadline: float) -> list[Run]:
        """Read every run's document until it is terminal (reading it marks a run whose process died as failed)."""
        async with httpx.AsyncClient(
            base_url=self.url, transport=Recorder(self.name, self.clock, self.answers)
        ) as http:
            # A few at a time, each read at least once whatever the clock says: after a long run with
            # hundreds of runs, a burst of reads all waiting for the pool would time out together.
            slots = asyncio.Semaphore(16)
            return list(await asyncio.gather(*(self._settle(http, r, deadline, slots) for r in self.runs)))

    async def _settle(
        self, http: httpx.AsyncClient, record: dict[str, Any], deadline: float, slots: asyncio.Semaphore
    ) -> Run:
        status: str | None = None
        answer: str | None = None
        first = True
        while record["answered"] and (first or self.clock() < deadline):
            first = False
            with contextlib.suppress(httpx.HTTPError, ValueError):
                async with slots:
                    response = await http.get(f"/runs/{record['answered'][0]}", timeout=10.0)
                if response.status_code == 404:
                    status = "not found"
                    break
                if response.status_code != 200:
                    status = f"http {response.status_code}"
                else:
                    doc = response.json()
                    status = doc["status"]
                    if status != "running":
                        answer = (doc.get("result") or {}).get("answer")
                        break
            await asyncio.sleep(0.5)
        return Run(
            record["key"], tuple(record["answered"]), record["start"], status, answer, record.get("cancel", False)
        )


async def publish_mid_body(port: int) -> None:
    """A publisher that sends its headers and half its body, then goes away (straight to one hub)."""
    body = b'{"event": "message", "data": {"k": "never-sent", "pad": "' + b"x" * 200 + b'"}}'
    head = (
        f"POST /topics/nemesis-mid-body/events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError, TimeoutError):
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
        writer.write(head + body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await writer.wait_closed()
