"""A bare SSE reader for tests: httpx streaming plus the project's Decoder, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from ssehub.sse import Decoder, ServerSentEvent


@dataclass
class Read:
    status: int
    headers: httpx.Headers
    events: list[ServerSentEvent] = field(default_factory=list)
    raw: bytes = b""
    ended: bool = False  # the server ended the response (rather than us stopping)
    retry: int | None = None


async def read_sse(
    client: httpx.AsyncClient,
    url: str,
    *,
    count: int | None = None,
    headers: Mapping[str, str] | None = None,
    until_raw: bytes | None = None,
) -> Read:
    """GET `url` as SSE; stop after `count` events, when `until_raw` appears, or when the server ends."""
    decoder = Decoder()
    async with client.stream("GET", url, headers={"accept": "text/event-stream", **(headers or {})}) as resp:
        read = Read(resp.status_code, resp.headers)
        if resp.status_code != 200:
            await resp.aread()
            read.raw = resp.content
            return read
        async for chunk in resp.aiter_raw():
            read.raw += chunk
            read.events += decoder.feed(chunk)
            read.retry = decoder.retry
            if count is not None and len(read.events) >= count:
                return read
            if until_raw is not None and until_raw in read.raw:
                return read
        read.ended = True
    return read
