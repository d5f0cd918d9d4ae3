"""`redis://host:port/db`: topic logs in Redis Streams, shared by many processes and nodes.

Keys (all under a prefix, `ssehub:` unless the URL says `?prefix=...`):

    {p}topic:{name}   hash    last_id, first_id, status, created, updated, closed_at, gen
    {p}meta:{name}    hash    metadata: field -> its JSON text
    {p}log:{name}     stream  event N is entry `N-0`; a close adds `last-1`; a delete leaves `last-2`
    {p}topics         zset    every topic name, score 0, so names page in lexical order
    {p}gen            counter a new number for every topic created, so idempotency keys die with their topic
    {p}key:{gen}:{k}  string  an idempotency key's ids, expiring after key_ttl

One Lua script per write makes the idempotency check, the closed check, id
assignment, the append and the trim one atomic step: a publish either fully
happens or not at all, whatever the network does afterwards.

Fan-out: each process runs one reader task that blocks in a single `XREAD` on
the logs of every topic it follows (those with local subscribers) and reports
their entries to the hub in stream order, so events, the close marker and the
delete marker arrive in id order, without gaps or repeats. A topic nobody
follows here costs nothing; a topic followed by 1,000 local subscribers costs
the same as one followed by one. `follow` wakes the blocked reader by adding
to a small per-process wake stream, so the set of streams can change without
dropping the connection. A process's own appends are reported at once when the
reader is up to date (the reader then skips them), saving local subscribers the
round trip.

Redis going away: every call raises `StoreUnavailable` (a 503); the reader
retries with backoff and continues from the last entry it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..events import Event, NewEvent, TopicInfo
from ..exceptions import InvalidInput, StoreUnavailable, TopicClosed, TopicNotFound
from .base import Change, Page, Store

__all__ = ["RedisStore"]

log = logging.getLogger("ssehub.redis")

# Creates the topic when it does not exist yet. Needs KEYS[1] topic hash, KEYS[2] log,
# KEYS[3] the topics zset, KEYS[4] the gen counter, KEYS[5] metadata, ARGV[1] name, ARGV[2] now.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local gen = redis.call('INCR', KEYS[4])
  -- A delete leaves a marker in the log for other nodes' readers; a new topic starts a new log.
  redis.call('DEL', KEYS[2], KEYS[5])
  redis.call('HSET', KEYS[1], 'last_id', 0, 'first_id', 1, 'status', 'open',
             'created', ARGV[2], 'updated', ARGV[2], 'gen', gen)
  redis.call('ZADD', KEYS[3], 0, ARGV[1])
end
"""

# KEYS: topic, log, topics, gen, meta. ARGV: name, now, max_events, key_ttl_ms, idempotency key or '',
# close status or '', ttl_ms, key prefix, then event name and data pairs.
# Everything that can refuse the append is checked before the first write of the events.
_APPEND = (
    _CREATE
    + """
local ikey = nil
if ARGV[5] ~= '' then
  ikey = ARGV[8] .. redis.call('HGET', KEYS[1], 'gen') .. ':' .. ARGV[5]
  local prior = redis.call('GET', ikey)
  if prior then return {'dup', prior} end
end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'open' then return {'closed', status} end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_id'))
local first_id = tonumber(redis.call('HGET', KEYS[1], 'first_id'))
local n = (#ARGV - 8) / 2
for i = 1, n do
  redis.call('XADD', KEYS[2], (last + i) .. '-0', 'e', ARGV[7 + 2 * i], 'd', ARGV[8 + 2 * i], 't', ARGV[2])
end
local first = last + 1
last = last + n
local max_events = tonumber(ARGV[3])
if last - first_id + 1 > max_events then
  first_id = last - max_events + 1
  redis.call('XTRIM', KEYS[2], 'MINID', first_id .. '-0')
end
redis.call('HSET', KEYS[1], 'last_id', last, 'first_id', first_id, 'updated', ARGV[2])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[6], 'closed_at', ARGV[2])
  redis.call('XADD', KEYS[2], last .. '-1', 'x', ARGV[6])
  for _, key in ipairs({KEYS[1], KEYS[2], KEYS[5]}) do redis.call('PEXPIRE', key, ARGV[7]) end
end
if ikey then redis.call('SET', ikey, first .. ':' .. n, 'PX', ARGV[4]) end
return {'ok', first .. ':' .. n}
"""
)

# KEYS: topic, log, meta. ARGV: status, now, ttl_ms. Returns 0: no such topic, 1: already closed, 2: closed now.
_CLOSE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 1 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'closed_at', ARGV[2])
redis.call('XADD', KEYS[2], redis.call('HGET', KEYS[1], 'last_id') .. '-1', 'x', ARGV[1])
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[3]) end
return 2
"""

# KEYS: topic, log, meta, topics. ARGV: name, marker_ttl_ms. Returns 0 when there is no such topic.
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = redis.call('HGET', KEYS[1], 'last_id')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
-- The marker tells other nodes' readers; it outlives them only briefly.
redis.call('XADD', KEYS[2], last .. '-2', 'x', 'deleted')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: topic, log, topics, gen, meta. ARGV: name, now, then field and JSON text pairs ('' removes the field).
_META = (
    _CREATE
    + """
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[5], ARGV[i])
  else
    redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1])
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[5], ttl) end
return 1
"""
)

# KEYS: topics. ARGV: key prefix of topic hashes, then names. Drops the names whose topic expired.
_FORGET = """
local gone = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    gone = gone + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return gone
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _position(entry_id: str) -> tuple[int, int]:
    number, _, kind = entry_id.partition("-")
    return int(number), int(kind)


class RedisStore(Store):
    shared = True

    def __init__(self, url: str, *, block: float = 10.0, **options: Any) -> None:
        super().__init__(**options)
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        self.prefix = dict(query).get("prefix", "ssehub:")
        if not self.prefix or len(self.prefix) > 100:
            raise InvalidInput("the Redis key prefix (?prefix=) must be 1-100 characters")
        self.url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "prefix"])))
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        self._block_ms = _ms(block)
        # No automatic retries: a publish retried after a lost reply could be written twice.
        # A caller retries with its Idempotency-Key instead.
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 2,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        try:
            self._redis = aioredis.Redis.from_url(self.url, socket_timeout=5, **common)
            # The reader blocks in XREAD on its own connection, longer than any ordinary call.
            self._reader = aioredis.Redis.from_url(
                self.url, single_connection_client=True, socket_timeout=block + 5, **common
            )
        except ValueError as exc:
            raise InvalidInput(f"bad Redis URL {url!r}: {exc}") from None
        self._append_script = self._redis.register_script(_APPEND)
        self._close_script = self._redis.register_script(_CLOSE)
        self._delete_script = self._redis.register_script(_DELETE)
        self._meta_script = self._redis.register_script(_META)
        self._forget_script = self._redis.register_script(_FORGET)
        self._wake_key = f"{self.prefix}wake:{uuid.uuid4().hex}"
        self._cursors: dict[str, str] = {}  # followed topic -> the last log entry reported
        self._followed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"

    # -- keys ----------------------------------------------------------------------------------------

    def _topic_key(self, name: str) -> str:
        return f"{self.prefix}topic:{name}"

    def _log_key(self, name: str) -> str:
        return f"{self.prefix}log:{name}"

    def _meta_key(self, name: str) -> str:
        return f"{self.prefix}meta:{name}"

    @property
    def _index_key(self) -> str:
        return f"{self.prefix}topics"

    @property
    def _gen_key(self) -> str:
        return f"{self.prefix}gen"

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise StoreUnavailable(f"Redis at {self._where} is unavailable: {exc or type(exc).__name__}") from None

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            # Not fatal: nodes may start before Redis does. Until it answers, calls raise StoreUnavailable.
            log.warning("Redis at %s is not answering yet (%s); requests get 503 until it does", self._where, exc)
        self._task = asyncio.create_task(self._read_loop(), name="ssehub-redis-reader")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._cursors.clear()
        await self._reader.aclose()
        await self._redis.aclose()

    # -- following ---------------------------------------------------------------------------------------

    async def follow(self, topic: str, after: int) -> None:
        self._cursors[topic] = f"{after}-0"
        self._followed.set()
        try:
            # Wake the reader blocked in XREAD so it adds this topic's log now.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
                pipe.pexpire(self._wake_key, self._block_ms * 3)
                await pipe.execute()
        except RedisError:
            pass  # the reader is reconnecting and rebuilds its set of logs when it does

    async def unfollow(self, topic: str) -> None:
        # No wake-up: entries of a topic no longer followed are ignored when they arrive.
        self._cursors.pop(topic, None)

    async def _read_loop(self) -> None:
        wake_cursor = "0-0"
        backoff = 0.05
        while True:
            if not self._cursors:
                self._followed.clear()
                await self._followed.wait()
                continue
            streams: dict[Any, Any] = {self._log_key(t): c for t, c in self._cursors.items()}
            streams[self._wake_key] = wake_cursor
            try:
                reply: Any = await self._reader.xread(streams, count=1000, block=self._block_ms)
            except RedisError as exc:
                log.warning("Redis reader: %s; retrying in %.2fs", exc or type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            items: list[Any] = list(reply.items() if isinstance(reply, dict) else reply or [])
            for key, entries in items:
                if key == self._wake_key:
                    wake_cursor = entries[-1][0]
                    continue
                topic = key[len(self.prefix) + len("log:") :]
                if topic in self._cursors:
                    self._report(topic, entries)

    def _report(self, topic: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        events: list[Event] = []
        for entry_id, fields in entries:
            number, _, kind = entry_id.partition("-")
            if _position(entry_id) <= _position(self._cursors[topic]):
                continue  # already reported by this process's own append
            self._cursors[topic] = entry_id
            if kind == "0":
                events.append(Event(int(number), fields["e"], fields["d"], float(fields["t"])))
            elif kind == "1":
                self._notify(Change(topic, tuple(events), fields["x"]))
                events = []
            else:
                if events:
                    self._notify(Change(topic, tuple(events)))
                # The hub drops its tail and follows afresh if the topic is created again.
                self._cursors.pop(topic, None)
                self._notify(Change(topic, deleted=True))
                return
        if events:
            self._notify(Change(topic, tuple(events)))

    # -- the contract --------------------------------------------------------------------------------------

    def _info(self, name: str, fields: dict[str, str], meta: dict[str, str]) -> TopicInfo:
        closed_at = fields.get("closed_at")
        return TopicInfo(
            name,
            int(fields["last_id"]),
            int(fields["first_id"]),
            fields["status"],
            float(fields["created"]),
            float(fields["updated"]),
            None if closed_at is None else float(closed_at),
            {k: json.loads(v) for k, v in sorted(meta.items())},
        )

    async def append(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        close: str | None = None,
    ) -> list[int]:
        now = self.now()
        args: list[Any] = [
            topic,
            repr(now),
            self.max_events,
            _ms(self.key_ttl),
            idempotency_key or "",
            close or "",
            _ms(self.ttl),
            f"{self.prefix}key:",
        ]
        for e in events:
            args += [e.event, e.data]
        keys = [self._topic_key(topic), self._log_key(topic), self._index_key, self._gen_key, self._meta_key(topic)]
        with self._unavailable():
            outcome, value = await self._append_script(keys=keys, args=args)
        if outcome == "closed":
            raise TopicClosed(f"topic {topic!r} is {value}")
        first, _, count = value.partition(":")
        ids = list(range(int(first), int(first) + int(count)))
        if outcome == "ok" and self._cursors.get(topic) == f"{ids[0] - 1}-0":
            # Followed here and the reader has reported everything before: report at once, so local
            # subscribers need not wait for the round trip (the reader skips what was reported).
            self._cursors[topic] = f"{ids[-1]}-{1 if close else 0}"
            stored = tuple(Event(i, e.event, e.data, now) for i, e in zip(ids, events, strict=True))
            self._notify(Change(topic, stored, close))
        return ids

    async def read(self, topic: str, after: int, limit: int) -> Page | None:
        with self._unavailable():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(self._topic_key(topic), ["first_id", "last_id", "status"])
                pipe.xrange(self._log_key(topic), f"{after + 1}-0", "+", count=limit)
                bounds, entries = await pipe.execute()
        if bounds[0] is None:
            return None
        events = [
            Event(int(entry_id.partition("-")[0]), f["e"], f["d"], float(f["t"]))
            for entry_id, f in entries
            if entry_id.endswith("-0")
        ]
        return Page(events, int(bounds[0]), int(bounds[1]), bounds[2])

    async def info(self, topic: str) -> TopicInfo | None:
        with self._unavailable():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._topic_key(topic))
                pipe.hgetall(self._meta_key(topic))
                fields, meta = await pipe.execute()
        return self._info(topic, fields, meta) if fields else None

    async def close_topic(self, topic: str, status: str) -> TopicInfo:
        keys = [self._topic_key(topic), self._log_key(topic), self._meta_key(topic)]
        with self._unavailable():
            outcome = await self._close_script(keys=keys, args=[status, repr(self.now()), _ms(self.ttl)])
        info = await self.info(topic) if outcome else None
        if info is None:
            raise TopicNotFound(f"no topic {topic!r}")
        if outcome == 2 and self._cursors.get(topic) == f"{info.last_id}-0":
            self._cursors[topic] = f"{info.last_id}-1"
            self._notify(Change(topic, (), status))
        return info

    async def delete_topic(self, topic: str) -> bool:
        keys = [self._topic_key(topic), self._log_key(topic), self._meta_key(topic), self._index_key]
        with self._unavailable():
            found = await self._delete_script(keys=keys, args=[topic, self._block_ms * 3])
        if not found:
            return False
        # Here at once; other nodes learn it from the marker in the log.
        self._cursors.pop(topic, None)
        self._notify(Change(topic, deleted=True))
        return True

    async def topics(self, prefix: str = "", after: str = "", limit: int = 100) -> list[TopicInfo]:
        # Topic names are ASCII below DEL, so prefix + DEL is above every name that starts with prefix.
        low = f"({after}" if after >= prefix and after else f"[{prefix}" if prefix else "-"
        high = f"({prefix}\x7f" if prefix else "+"
        found: list[TopicInfo] = []
        with self._unavailable():
            while len(found) < limit:
                names = cast(
                    list[str], await self._redis.zrangebylex(self._index_key, low, high, 0, limit - len(found))
                )
                if not names:
                    break
                async with self._redis.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.hgetall(self._topic_key(name))
                        pipe.hgetall(self._meta_key(name))
                    replies = await pipe.execute()
                expired = []
                for i, name in enumerate(names):
                    fields, meta = replies[2 * i], replies[2 * i + 1]
                    if fields:
                        found.append(self._info(name, fields, meta))
                    else:
                        expired.append(name)
                if expired:
                    await self._forget_script(keys=[self._index_key], args=[f"{self.prefix}topic:", *expired])
                low = f"({names[-1]}"
        return found

    async def update_meta(self, topic: str, meta: dict[str, Any]) -> TopicInfo:
        args: list[Any] = [topic, repr(self.now())]
        for key, value in meta.items():
            try:
                text = "" if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"metadata {key!r} is not JSON-serialisable: {exc}") from None
            args += [key, text]
        keys = [self._topic_key(topic), self._log_key(topic), self._index_key, self._gen_key, self._meta_key(topic)]
        with self._unavailable():
            await self._meta_script(keys=keys, args=args)
        info = await self.info(topic)
        if info is None:  # expired in between: as good as deleted
            raise TopicNotFound(f"no topic {topic!r}")
        return info

    async def purge(self) -> int:
        # Closed topics and idempotency keys expire by themselves (PEXPIRE); what is left is
        # to forget the names of expired topics in the listing.
        gone = 0
        low = "-"
        with self._unavailable():
            while True:
                names = cast(list[str], await self._redis.zrangebylex(self._index_key, low, "+", 0, 1000))
                if not names:
                    return gone
                gone += await self._forget_script(keys=[self._index_key], args=[f"{self.prefix}topic:", *names])
                low = f"({names[-1]}"
