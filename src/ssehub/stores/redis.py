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
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..events import Event, NewEvent, TopicInfo
from ..exceptions import InvalidInput, StoreUnavailable, TopicClosed, TopicNotFound
from .base import Appended, Change, Created, Page, Producer, Store, StreamState

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


# -- Durable Streams (see Store.create_stream) ------------------------------------------------------------
# Every script takes the stream's own keys only -- KEYS: topic hash, log, metadata, durable hash -- so on a
# Redis Cluster they live in one hash slot. A fork and its source are different topics: a fork's creation
# is one script on the source (the pin) and one on the fork, and a delete cascades one script per topic.
#
#   {p}durable:{name}  hash  gen (the topic incarnation it belongs to; a stale hash is wiped),
#                            deadline (ms), deleted, seq (last Stream-Seq), source, forks (pin count),
#                            f:{fork} (a pin), p:{producer} ("epoch:seq")
#
# A stream that nothing pins expires by itself: its keys get PEXPIREAT at the earlier of its deadline and
# its close plus the closed-topic TTL; a pinned one is kept (PERSIST) until its last fork lets it go.
_DURABLE_LIB = """
local now_ms = tonumber(ARGV[1])
local function current()
  local gen = redis.call('HGET', KEYS[1], 'gen')
  if not gen then return false end
  if redis.call('HGET', KEYS[4], 'gen') ~= gen then
    redis.call('DEL', KEYS[4])
    redis.call('HSET', KEYS[4], 'gen', gen)
  end
  return true
end
local function forks() return tonumber(redis.call('HGET', KEYS[4], 'forks') or '0') end
local function expired()
  local deadline = redis.call('HGET', KEYS[4], 'deadline')
  return deadline ~= false and tonumber(deadline) <= now_ms
end
local function deleted() return redis.call('HGET', KEYS[4], 'deleted') == '1' end
local function arm(close_ttl_ms)
  local at = nil
  if forks() == 0 then
    local deadline = redis.call('HGET', KEYS[4], 'deadline')
    if deadline then at = tonumber(deadline) end
    local closed_at = redis.call('HGET', KEYS[1], 'closed_at')
    if closed_at then
      local c = math.floor(tonumber(closed_at) * 1000) + close_ttl_ms
      if at == nil or c < at then at = c end
    end
  end
  for i = 1, 4 do
    if at then redis.call('PEXPIREAT', KEYS[i], math.max(at, now_ms + 1)) else redis.call('PERSIST', KEYS[i]) end
  end
end
local function drop(marker_ttl_ms)
  local last = redis.call('HGET', KEYS[1], 'last_id')
  local source = redis.call('HGET', KEYS[4], 'source') or ''
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
  -- The marker tells other nodes' readers, as a delete through ssehub's own interface does.
  redis.call('XADD', KEYS[2], last .. '-2', 'x', 'deleted')
  redis.call('PEXPIRE', KEYS[2], marker_ttl_ms)
  return source
end
"""

_DURABLE_SCRIPTS = {
    # ARGV: now_ms, now, closed, deadline_ms, base, gen, source, close_ttl_ms, number of metadata fields,
    # then metadata field and JSON pairs, then event name and data pairs.
    "create": _DURABLE_LIB
    + """
local released = ''
if redis.call('EXISTS', KEYS[1]) == 1 then
  current()
  if not deleted() and not expired() then return {'exists'} end
  if deleted() or forks() > 0 then
    redis.call('HSET', KEYS[4], 'deleted', '1')
    return {'gone'}
  end
  released = redis.call('HGET', KEYS[4], 'source') or ''
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local base = tonumber(ARGV[5])
local nmeta = tonumber(ARGV[9])
local first_event = 10 + 2 * nmeta
local n = (#ARGV - first_event + 1) / 2
redis.call('HSET', KEYS[1], 'last_id', base + n, 'first_id', base + 1, 'status', 'open',
           'created', ARGV[2], 'updated', ARGV[2], 'gen', ARGV[6])
for i = 0, nmeta - 1 do redis.call('HSET', KEYS[3], ARGV[10 + 2 * i], ARGV[11 + 2 * i]) end
for i = 0, n - 1 do
  redis.call('XADD', KEYS[2], (base + 1 + i) .. '-0', 'e', ARGV[first_event + 2 * i],
             'd', ARGV[first_event + 2 * i + 1], 't', ARGV[2])
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'closed_at', ARGV[2])
  redis.call('XADD', KEYS[2], (base + n) .. '-1', 'x', 'completed')
end
redis.call('HSET', KEYS[4], 'gen', ARGV[6])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[4], 'deadline', ARGV[4]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[4], 'source', ARGV[7]) end
arm(tonumber(ARGV[8]))
return {'created', released, n}
""",
    # ARGV: now_ms, now, Stream-Seq or '', producer id or '', epoch, seq, close, renew deadline_ms or '',
    # max_events, close_ttl_ms, then event name and data pairs.
    # Returns {outcome, last_id, closed, first new id, count, epoch, seq}.
    "append": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', 0, 0, 0, 0, '', ''} end
current()
local last = tonumber(redis.call('HGET', KEYS[1], 'last_id'))
local closed = redis.call('HGET', KEYS[1], 'status') ~= 'open'
local closed_n = closed and 1 or 0
if deleted() then return {'gone', last, closed_n, 0, 0, '', ''} end
if expired() then
  if forks() > 0 then
    redis.call('HSET', KEYS[4], 'deleted', '1')
    return {'gone', last, closed_n, 0, 0, '', ''}
  end
  return {'not_found', 0, 0, 0, 0, '', ''}
end
local epoch, pseq = '', ''
if ARGV[4] ~= '' then
  local claim_epoch, claim_seq = tonumber(ARGV[5]), tonumber(ARGV[6])
  local stored = redis.call('HGET', KEYS[4], 'p:' .. ARGV[4])
  local verdict
  if not stored then
    if claim_seq == 0 then verdict, epoch, pseq = 'accept', claim_epoch, 0
    else verdict, epoch, pseq = 'seq_gap', claim_epoch, 0 end
  else
    local colon = string.find(stored, ':', 1, true)
    local e, s = tonumber(string.sub(stored, 1, colon - 1)), tonumber(string.sub(stored, colon + 1))
    if claim_epoch < e then verdict, epoch, pseq = 'stale_epoch', e, s
    elseif claim_epoch > e then
      if claim_seq == 0 then verdict, epoch, pseq = 'accept', claim_epoch, 0
      else verdict, epoch, pseq = 'bad_epoch_seq', e, s end
    elseif claim_seq <= s then verdict, epoch, pseq = 'duplicate', e, s
    elseif claim_seq == s + 1 then verdict, epoch, pseq = 'accept', e, claim_seq
    else verdict, epoch, pseq = 'seq_gap', e, s + 1 end
  end
  if verdict == 'duplicate' then return {'duplicate', last, closed_n, 0, 0, epoch, pseq} end
  if closed then return {'closed', last, 1, 0, 0, epoch, pseq} end
  if verdict ~= 'accept' then return {verdict, last, 0, 0, 0, epoch, pseq} end
end
if closed then return {'closed', last, 1, 0, 0, '', ''} end
if ARGV[3] ~= '' then
  -- Byte-wise: Lua's own string order follows the server's locale.
  local prior = redis.call('HGET', KEYS[4], 'seq')
  if prior then
    local a, b = ARGV[3], prior
    local cmp = 0
    for i = 1, math.min(#a, #b) do
      local x, y = string.byte(a, i), string.byte(b, i)
      if x ~= y then cmp = (x < y) and -1 or 1 break end
    end
    if cmp == 0 then cmp = (#a < #b) and -1 or ((#a > #b) and 1 or 0) end
    if cmp <= 0 then return {'seq_conflict', last, 0, 0, 0, '', ''} end
  end
  redis.call('HSET', KEYS[4], 'seq', ARGV[3])
end
local n = (#ARGV - 10) / 2
for i = 1, n do
  redis.call('XADD', KEYS[2], (last + i) .. '-0', 'e', ARGV[9 + 2 * i], 'd', ARGV[10 + 2 * i], 't', ARGV[2])
end
local first = last + 1
last = last + n
local first_id = tonumber(redis.call('HGET', KEYS[1], 'first_id'))
local max_events = tonumber(ARGV[9])
if last - first_id + 1 > max_events then
  first_id = last - max_events + 1
  redis.call('XTRIM', KEYS[2], 'MINID', first_id .. '-0')
end
redis.call('HSET', KEYS[1], 'last_id', last, 'first_id', first_id, 'updated', ARGV[2])
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'closed_at', ARGV[2])
  redis.call('XADD', KEYS[2], last .. '-1', 'x', 'completed')
  closed_n = 1
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[4], 'p:' .. ARGV[4], epoch .. ':' .. pseq) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[4], 'deadline', ARGV[8]) end
arm(tonumber(ARGV[10]))
return {'ok', last, closed_n, first, n, epoch, pseq}
""",
    # ARGV: now_ms, deadline_ms, close_ttl_ms.
    "touch": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
current()
if deleted() or expired() then return 0 end
redis.call('HSET', KEYS[4], 'deadline', ARGV[2])
arm(tonumber(ARGV[3]))
return 1
""",
    # ARGV: now_ms, marker_ttl_ms. Returns {outcome, the source to unpin or ''}.
    "delete": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', ''} end
current()
if deleted() then return {'gone', ''} end
if forks() > 0 then
  redis.call('HSET', KEYS[4], 'deleted', '1')
  return {expired() and 'not_found' or 'soft', ''}
end
local outcome = expired() and 'not_found' or 'deleted'
return {outcome, drop(tonumber(ARGV[2]))}
""",
    # ARGV: now_ms, fork, close_ttl_ms. Returns 'none', 'gone' or 'ok'.
    "pin": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'none' end
current()
if deleted() then return 'gone' end
if expired() then
  if forks() == 0 then return 'none' end
  redis.call('HSET', KEYS[4], 'deleted', '1')
  return 'gone'
end
if redis.call('HSETNX', KEYS[4], 'f:' .. ARGV[2], '1') == 1 then redis.call('HINCRBY', KEYS[4], 'forks', 1) end
arm(tonumber(ARGV[3]))
return 'ok'
""",
    # ARGV: now_ms, fork, close_ttl_ms, marker_ttl_ms. Returns {1 if this one went, the next source to unpin}.
    "unpin": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
current()
if redis.call('HDEL', KEYS[4], 'f:' .. ARGV[2]) == 1 then redis.call('HINCRBY', KEYS[4], 'forks', -1) end
if forks() == 0 and (deleted() or expired()) then return {1, drop(tonumber(ARGV[4]))} end
arm(tonumber(ARGV[3]))
return {0, ''}
""",
}


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
        self._ds_scripts = {name: self._redis.register_script(text) for name, text in _DURABLE_SCRIPTS.items()}
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
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # redis-py can swallow the CancelledError of a cancelled XREAD: aclose() would wait forever.
                raise asyncio.CancelledError
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

    # -- Durable Streams -------------------------------------------------------------------------------------

    def _durable_key(self, name: str) -> str:
        return f"{self.prefix}durable:{name}"

    def _stream_keys(self, name: str) -> list[str]:
        return [self._topic_key(name), self._log_key(name), self._meta_key(name), self._durable_key(name)]

    async def _ds(self, script: str, topic: str, args: list[Any]) -> Any:
        with self._unavailable():
            return await self._ds_scripts[script](keys=self._stream_keys(topic), args=[_ms(self.now()), *args])

    def _report_appended(self, topic: str, stored: tuple[Event, ...], status: str | None, last_id: int) -> None:
        # As `append` does: followed here and everything before reported, so report at once.
        before = stored[0].id - 1 if stored else last_id
        if self._cursors.get(topic) == f"{before}-0":
            self._cursors[topic] = f"{last_id}-{1 if status else 0}"
            self._notify(Change(topic, stored, status))

    async def stream_state(self, topic: str) -> StreamState | None:
        with self._unavailable():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._topic_key(topic))
                pipe.hgetall(self._meta_key(topic))
                pipe.hmget(self._durable_key(topic), ["gen", "deadline", "deleted", "forks"])
                fields, meta, durable = await pipe.execute()
        if not fields:
            return None
        info = self._info(topic, fields, meta)
        gen, deadline, deleted, forks = durable
        if gen != fields.get("gen"):
            return StreamState(info)
        return StreamState(info, None if deadline is None else int(deadline) / 1000, deleted == "1", int(forks or 0))

    async def create_stream(
        self,
        topic: str,
        meta: dict[str, Any],
        events: Sequence[NewEvent],
        *,
        closed: bool,
        deadline: float | None,
        base: int = 0,
        forked_from: str | None = None,
    ) -> Created:
        now = self.now()
        args: list[Any] = [
            repr(now),
            "1" if closed else "",
            "" if deadline is None else _ms(deadline),
            base,
            uuid.uuid4().hex,
            forked_from or "",
            _ms(self.ttl),
            len(meta),
        ]
        for key, value in meta.items():
            args += [key, json.dumps(value, separators=(",", ":"))]
        for e in events:
            args += [e.event, e.data]
        reply = await self._ds("create", topic, args)
        outcome = reply[0]
        if outcome == "created":
            with self._unavailable():
                await self._redis.zadd(self._index_key, {topic: 0})
        state = await self.stream_state(topic)
        if state is None:  # expired or deleted in between: as good as gone
            raise TopicNotFound(f"no topic {topic!r}")
        if outcome != "created":
            return Created(outcome, state)
        ids = tuple(range(base + 1, base + 1 + len(events)))
        stored = tuple(Event(i, e.event, e.data, now) for i, e in zip(ids, events, strict=True))
        if stored or closed:
            self._report_appended(topic, stored, "completed" if closed else None, base + len(stored))
        return Created("created", state, ids, reply[1] or None)

    async def append_stream(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        seq: str | None = None,
        producer: Producer | None = None,
        close: bool = False,
        renew: float | None = None,
    ) -> Appended:
        now = self.now()
        args: list[Any] = [
            repr(now),
            seq or "",
            "" if producer is None else producer.id,
            0 if producer is None else producer.epoch,
            0 if producer is None else producer.seq,
            "1" if close else "",
            "" if renew is None else _ms(renew),
            self.max_events,
            _ms(self.ttl),
        ]
        for e in events:
            args += [e.event, e.data]
        outcome, last_id, closed, first, count, epoch, pseq = await self._ds("append", topic, args)
        ids = tuple(range(int(first), int(first) + int(count)))
        if outcome == "ok" and (ids or close):
            stored = tuple(Event(i, e.event, e.data, now) for i, e in zip(ids, events, strict=True))
            self._report_appended(topic, stored, "completed" if close else None, int(last_id))
        return Appended(
            outcome,
            int(last_id),
            bool(int(closed)),
            ids,
            None if epoch == "" else int(epoch),
            None if pseq == "" else int(pseq),
        )

    async def touch_stream(self, topic: str, deadline: float) -> None:
        await self._ds("touch", topic, [_ms(deadline), _ms(self.ttl)])

    async def delete_stream(self, topic: str) -> Literal["deleted", "soft", "not_found", "gone"]:
        outcome, source = await self._ds("delete", topic, [self._block_ms * 3])
        if outcome in ("deleted", "soft") or source:
            self._cursors.pop(topic, None)
            self._notify(Change(topic, deleted=True))
        if source or outcome == "deleted":
            with self._unavailable():
                await self._redis.zrem(self._index_key, topic)
        if source:
            await self.unpin_source(source, topic)
        result: Literal["deleted", "soft", "not_found", "gone"] = outcome
        return result

    async def pin_source(self, source: str, fork: str) -> StreamState | None:
        outcome = await self._ds("pin", source, [fork, _ms(self.ttl)])
        if outcome == "none":
            return None
        state = await self.stream_state(source)
        if state is not None and outcome == "gone":
            return StreamState(state.info, state.deadline, True, state.forks)
        return state

    async def unpin_source(self, source: str, fork: str) -> None:
        # A source that goes may have been a fork too: the cascade walks up one topic (one slot) at a time.
        while source:
            dropped, upstream = await self._ds("unpin", source, [fork, _ms(self.ttl), self._block_ms * 3])
            if not dropped:
                return
            self._cursors.pop(source, None)
            self._notify(Change(source, deleted=True))
            with self._unavailable():
                await self._redis.zrem(self._index_key, source)
            source, fork = upstream, source
