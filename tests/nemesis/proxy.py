"""A loopback TCP proxy the harness controls, on asyncio streams.

    client --> Proxy(port) --> upstream[0], upstream[1], ... (each new connection to the next one that answers)

In front of the hubs it is the load balancer of an operator's set-up; between a hub and Redis
it is the network. The harness can, at any moment:

- `cut()` connections: each marked connection forwards half of its next chunk, in whichever
  direction, and is then aborted, so streams break in the middle of an SSE frame and requests
  in the middle of their body (an idle connection is aborted after `idle` seconds);
- add `latency` (seconds) to every chunk in both directions;
- `partition()` / `heal()`: a black hole, as a real partition is: nothing moves in either
  direction and new connections hang, but nothing is closed, until healed.

Backpressure is kept: a chunk is read only once the previous one was written, so a reader
that stops reading stalls the server behind the proxy, as it would without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence

__all__ = ["Proxy"]

CHUNK = 64 * 1024


class Proxy:
    def __init__(self, name: str, upstreams: Sequence[int], *, host: str = "127.0.0.1") -> None:
        if not upstreams:
            raise ValueError("a proxy needs at least one upstream port")
        self.name = name
        self.host = host
        self.upstreams = list(upstreams)
        self.latency = 0.0
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        self.refused = 0  # connections no upstream would take
        self._links: set[_Link] = set()
        self._next = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"<Proxy {self.name} :{self.port} -> {self.upstreams} links={len(self._links)}>"

    async def start(self, port: int = 0) -> Proxy:
        self._server = await asyncio.start_server(self._accept, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for _ in range(100):  # the aborted links' tasks notice and finish
            if not self._links:
                break
            await asyncio.sleep(0.01)

    @property
    def links(self) -> int:
        return len(self._links)

    @property
    def partitioned(self) -> bool:
        return not self._flowing.is_set()

    def partition(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    async def cut(self, fraction: float = 1.0, rng: random.Random | None = None, *, idle: float = 0.5) -> int:
        """Cut `fraction` of the open connections mid-chunk; returns how many were marked."""
        rng = rng or random.Random()
        chosen = [link for link in sorted(self._links, key=id) if rng.random() < fraction]
        for link in chosen:
            link.cutting = True
        self.cuts += len(chosen)
        await asyncio.sleep(idle)
        for link in chosen:
            link.abort()  # those that carried nothing meanwhile
        return len(chosen)

    # -- connections --------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(self, reader, writer)
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.upstreams)):
            port = self.upstreams[self._next % len(self.upstreams)]
            self._next += 1
            try:
                return await asyncio.wait_for(asyncio.open_connection(self.host, port), 2.0)
            except (OSError, TimeoutError):
                continue
        return None


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: Proxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.cutting = False
        self.aborted = False

    async def run(self) -> None:
        await self.proxy._flowing.wait()  # a connection made during a partition hangs until it heals
        if self.aborted:
            return
        self.upstream = await self.proxy._connect()
        if self.upstream is None or self.aborted:
            self.proxy.refused += self.upstream is None
            self.abort()
            return
        pumps = [
            asyncio.create_task(self._pump(self.client[0], self.upstream[1])),
            asyncio.create_task(self._pump(self.upstream[0], self.client[1])),
        ]
        try:
            # When one direction ends, the exchange is over: HTTP clients and Redis do not half-close.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        flowing = self.proxy._flowing
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await flowing.wait()
                data = await source.read(CHUNK)
                if not data:
                    return
                if self.cutting:
                    sink.write(data[: len(data) // 2])  # the first half, then nothing: a cut mid-frame
                    for _ in range(20):  # let the half leave before the reset discards what is buffered
                        if not sink.transport.get_write_buffer_size():
                            break
                        await asyncio.sleep(0.005)
                    self.abort()
                    return
                if self.proxy.latency > 0:
                    await asyncio.sleep(self.proxy.latency)
                await flowing.wait()
                sink.write(data)
                await sink.drain()

    def abort(self) -> None:
        """Close both sides at once, without flushing (a reset, not a goodbye)."""
        self.aborted = True
        for _, writer in filter(None, (self.client, self.upstream)):
            writer.transport.abort()

    def _close(self) -> None:
        for _, writer in filter(None, (self.client, self.upstream)):
            if not writer.is_closing():
                writer.close()
