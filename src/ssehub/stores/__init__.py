"""Stores keep the topic logs. `open_store(url)` picks one by the URL's scheme:

- `memory://`                 in-process, for tests and throwaway use
- `sqlite:///relative.db`     embedded and durable; three slashes and a relative path (to the
  `sqlite:////abs/path.db`    working directory), four slashes for an absolute one (the SQLAlchemy
  `sqlite:/abs/path.db`       convention); one slash is an absolute path too, as a URI without host
- `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix:///path.sock`, with `?cluster=yes`
  for a Redis Cluster: shared by many processes and nodes (`pip install ssehub[redis]`)
"""

from __future__ import annotations

from typing import Any

from ..exceptions import InvalidInput
from .base import Appended, Change, Created, Page, Producer, Store, StreamState, payload_fingerprint
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = [
    "Appended",
    "Change",
    "Created",
    "MemoryStore",
    "Page",
    "Producer",
    "SQLiteStore",
    "Store",
    "StreamState",
    "open_store",
    "payload_fingerprint",
]


def open_store(url: str, **options: Any) -> Store:
    """A store for `url`; `options` are the retention settings (max_events, ttl, key_ttl)."""
    if url.startswith("sqlite:/") and not url.startswith("sqlite://"):
        return SQLiteStore(url[len("sqlite:") :], **options)  # sqlite:/abs/path.db: a URI with no host
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidInput(f"store URL {url!r} has no scheme: use memory://, sqlite:///path.db or redis://host:port/db")
    if scheme == "memory":
        return MemoryStore(**options)
    if scheme == "sqlite":
        # sqlite:///rel.db -> "rel.db", sqlite:////abs.db -> "/abs.db" (the SQLAlchemy convention).
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise InvalidInput(f"store URL {url!r} names no database file")
        return SQLiteStore(path, **options)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from .redis import RedisStore
        except ImportError as exc:
            raise InvalidInput(f"the Redis store needs redis-py: pip install 'ssehub[redis]' ({exc})") from None
        return RedisStore(url, **options)
    raise InvalidInput(f"unknown store scheme {scheme!r}: use memory://, sqlite:///path.db or redis://host:port/db")
