"""The Durable Streams protocol, as pure functions with no I/O (the h11 way).

    offsets    minting and parsing the offsets a stream hands out (`-1`, `now`, and ids)
    headers    request headers: TTL, expiry, Stream-Seq, producer tuple, Stream-Closed, fork headers;
               content types, ETags and the Stream-Cursor
    messages   the bytes of an append as stored event data, and JSON mode's flatten and merge
    frames     the protocol's SSE dialect: `event: data` and `event: control`

The HTTP surface built on them is `ssehub.asgi.durable`.
"""

from __future__ import annotations

from . import frames, headers, messages, offsets

__all__ = ["frames", "headers", "messages", "offsets"]
