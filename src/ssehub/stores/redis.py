"""`redis://host:port/db`: topic logs in Redis Streams, shared by many processes and nodes.

Keys (all under a prefix, `ssehub:` unless the URL says `?prefix=...`). Every key of
a topic carries the hash tag `{g}` of the topic's slot group, one of 16: on a Redis
Cluster a group lives in one hash slot, so each script touches one slot and a
process follows a whole group with one blocking XREAD. Each group's tag is chosen
so that its slot lies in its own sixteenth of the slot space: the groups spread
evenly over the masters of a cluster.

    {p}{g}:topic:{name}      hash    last_id, first_id, status, created, updated, closed_at, epoch
    {p}{g}:meta:{name}       hash    metadata: field -> its JSON text
    {p}{g}:log:{name}        stream  event N is entry `N-0` (name, data, time and the log's epoch);
                                     a close adds `last-1`; a delete leaves `last-2`
    {p}{g}:topics            zset    the group's topic names, score 0, so names page in lexical order
    {p}{g}:key:{epoch}:{k}   string  an idempotency key's ids and payload fingerprint, expiring after
                                     key_ttl; under the epoch, so keys die with their log
    {p}{g}:wake:{uuid}       stream  one per process (per group on a cluster), to wake its reader

One Lua script per write makes the idempotency check, the closed check, id
assignment, the append and the trim one atomic step: a publish either fully
happens or not at all, whatever the network does afterwards.

Fan-out: each process runs one reader task (on a cluster, one per slot group
with followed topics) that blocks in a single `XREAD` on the logs of every topic
it follows (those with local subscribers) and reports their entries to the hub
in stream order, so events, the close marker and the delete marker arrive in id
order, without gaps or repeats. A topic nobody follows here costs nothing; a
topic followed by 1,000 local subscribers costs the same as one followed by one.
`follow` wakes the blocked reader by adding to its wake stream (once for any
number of follows while the reader has not yet re-read its set), so the set of
streams can change without dropping the connection. A process's own appends
are reported at once when the reader is up to date (the reader then skips
them), saving local subscribers the round trip.

Epochs: every log gets a random epoch when it is created, and every entry
carries it (all entries have the same fields, so Redis stores their names once).
A Redis that restarts without persistence, or is flushed, loses the logs; the
next append starts a new one from id 1. An entry, an append, a read or an info
that shows another epoch than the followed log's is reported as a reset, and the
reader follows the new log from its start; the reader also compares the epochs
of its logs whenever it reconnects and every `block` seconds (a lost log nobody
has written to since). So live subscribers learn it (`event: reset`) instead of
silently missing ids.

Redis going away: a call whose command provably never reached Redis (no
connection, a dead pooled connection, Redis loading) is retried for up to a
second (up to 15 s while connections time out rather than being refused: slow,
not gone); any other failure raises `StoreUnavailable` (a 503) at once, since a
write whose reply was lost must not be repeated. Commands wait (up to 15 s) for
one of `max_connections` connections, so a burst of subscribers queues instead
of failing. The reader retries with backoff and continues from the last entry
it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MaxConnectionsError,
    RedisError,
    TryAgainError,
)

from ..events import Event, NewEvent, TopicInfo
from ..exceptions import IdempotencyConflict, InvalidInput, StoreUnavailable, TopicClosed, TopicNotFound
from .base import Appended, Change, Created, Page, Producer, Store, StreamState, new_epoch, page_events
from .redis_client import NotSent, SlowConnect, open_client

__all__ = ["DURABILITY_LEVELS", "GROUPS", "RedisStore", "durability_problems"]

log = logging.getLogger("ssehub.redis")

T = TypeVar("T")

#: Slot groups: on a Redis Cluster, up to this many masters share the topics.
GROUPS = 16

# Refused before anything ran: retrying them cannot write twice.
_REFUSED = (NotSent, BusyLoadingError, MaxConnectionsError, TryAgainError, ClusterDownError)


def _group_tags() -> list[str]:
    """For each group, a hash tag whose slot lies in the group's sixteenth of the 16,384 slots."""
    width = 16384 // GROUPS
    tags = []
    for group in range(GROUPS):
        n = 0
        while key_slot(f"{group}.{n}".encode()) // width != group:
            n += 1
        tags.append(f"{{{group}.{n}}}")
    return tags


_TAGS = _group_tags()


def group_of(topic: str) -> int:
    return key_slot(topic.encode()) % GROUPS


# Reads the topic (t: epoch, status, last_id, first_id) and creates it when it does not exist yet.
# Needs KEYS[1] topic hash, KEYS[2] log, KEYS[3] the group's topic index, KEYS[4] metadata; ARGV[1] name,
# ARGV[2] now, ARGV[3] the epoch of a new log.
_CREATE = """
local t = redis.call('HMGET', KEYS[1], 'epoch', 'status', 'last_id', 'first_id')
if not t[1] then
  -- A delete leaves a marker in the log for other nodes' readers; a new topic starts a new log.
  redis.call('DEL', KEYS[2], KEYS[4])
  redis.call('HSET', KEYS[1], 'last_id', 0, 'first_id', 1, 'status', 'open',
             'created', ARGV[2], 'updated', ARGV[2], 'epoch', ARGV[3])
  redis.call('ZADD', KEYS[3], 0, ARGV[1])
  t = {ARGV[3], 'open', '0', '1'}
end
local epoch = t[1]
"""

# KEYS: topic, log, index, meta. ARGV: name, now, new epoch, max_events, key_ttl_ms, idempotency key or '',
# close status or '', ttl_ms, the group's key prefix, payload fingerprint or '', then event name and data
# pairs. Everything that can refuse the append is checked before the first write of the events.
# Returns {outcome, 'first:count', epoch}.
_APPEND = (
    _CREATE
    + """
local ikey = nil
if ARGV[6] ~= '' then
  ikey = ARGV[9] .. epoch .. ':' .. ARGV[6]
  local prior = redis.call('GET', ikey)
  if prior then
    local first, count, print = string.match(prior, '^(%d+):(%d+):?(.*)$')
    if print ~= '' and ARGV[10] ~= '' and print ~= ARGV[10] then return {'conflict', '', epoch} end
    return {'dup', first .. ':' .. count, epoch}
  end
end
if t[2] ~= 'open' then return {'closed', t[2], epoch} end
local last = tonumber(t[3])
local first_id = tonumber(t[4])
local n = (#ARGV - 10) / 2
for i = 1, n do
  redis.call('XADD', KEYS[2], (last + i) .. '-0', 'e', ARGV[9 + 2 * i], 'd', ARGV[10 + 2 * i], 't', ARGV[2], 'p', epoch)
end
local first = last + 1
last = last + n
local max_events = tonumber(ARGV[4])
if last - first_id + 1 > max_events then
  first_id = last - max_events + 1
  redis.call('XTRIM', KEYS[2], 'MINID', first_id .. '-0')
end
redis.call('HSET', KEYS[1], 'last_id', last, 'first_id', first_id, 'updated', ARGV[2])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[7], 'closed_at', ARGV[2])
  redis.call('XADD', KEYS[2], last .. '-1', 'x', ARGV[7])
  for _, key in ipairs({KEYS[1], KEYS[2], KEYS[4]}) do redis.call('PEXPIRE', key, ARGV[8]) end
end
if ikey then redis.call('SET', ikey, first .. ':' .. n .. ':' .. ARGV[10], 'PX', ARGV[5]) end
return {'ok', first .. ':' .. n, epoch}
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

# KEYS: topic, log, meta, index (and the Durable Streams state, with a cutoff). ARGV: name, marker_ttl_ms, and
# for the idle sweep a cutoff: delete only an open topic last updated before it that is not a Durable Stream.
# Returns 0 when there is no such topic (or it is not idle).
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] then
  local t = redis.call('HMGET', KEYS[1], 'status', 'updated')
  if t[1] ~= 'open' or tonumber(t[2]) > tonumber(ARGV[3]) or redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
end
local last = redis.call('HGET', KEYS[1], 'last_id')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
-- The marker tells other nodes' readers; it outlives them only briefly.
redis.call('XADD', KEYS[2], last .. '-2', 'x', 'deleted')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: topic, log, index, meta. ARGV: name, now, new epoch, then field and JSON text pairs ('' removes the field).
_META = (
    _CREATE
    + """
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[4], ARGV[i])
  else
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
return 1
"""
)

# KEYS: the group's index, then the topic hashes of ARGV's names. Drops the names whose topic expired.
_FORGET = """
local gone = 0
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    gone = gone + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return gone
"""

# KEYS: n topic hashes, then their n logs. For each: its epoch; '' when the topic and its log are gone;
# '?' when only the log is left (a delete marker the reader has still to report).
_EPOCHS = """
local n = #KEYS / 2
local out = {}
for i = 1, n do
  local epoch = redis.call('HGET', KEYS[i], 'epoch')
  if not epoch then
    if redis.call('EXISTS', KEYS[n + i]) == 1 then epoch = '?' else epoch = '' end
  end
  out[i] = epoch
end
return out
"""


# -- Durable Streams (see Store.create_stream) ------------------------------------------------------------
# Every script takes the stream's own keys only -- KEYS: topic hash, log, its group's topic index, metadata,
# durable hash, all with the topic's hash tag -- so on a Redis Cluster they live in one hash slot. A fork
# and its source are different topics: a fork's creation is one script on the source (the pin) and one on
# the fork, and a delete cascades one script per topic.
#
#   {p}{tag}:durable:{name}  hash  gen (the epoch of the topic it belongs to; a stale hash is wiped),
#                            deadline (ms), deleted, seq (last Stream-Seq), source, forks (pin count),
#                            f:{fork} (a pin), p:{producer} ("epoch:seq")
#
# A stream that nothing pins expires by itself: its keys get PEXPIREAT at the earlier of its deadline and
# its close plus the closed-topic TTL; a pinned one is kept (PERSIST) until its last fork lets it go.
_DURABLE_LIB = """
local now_ms = tonumber(ARGV[1])
local function current()
  local gen = redis.call('HGET', KEYS[1], 'epoch')
  if not gen then return false end
  if redis.call('HGET', KEYS[5], 'gen') ~= gen then
    redis.call('DEL', KEYS[5])
    redis.call('HSET', KEYS[5], 'gen', gen)
  end
  return true
end
local function forks() return tonumber(redis.call('HGET', KEYS[5], 'forks') or '0') end
local function expired()
  local deadline = redis.call('HGET', KEYS[5], 'deadline')
  return deadline ~= false and tonumber(deadline) <= now_ms
end
local function deleted() return redis.call('HGET', KEYS[5], 'deleted') == '1' end
local function arm(close_ttl_ms)
  local at = nil
  if forks() == 0 then
    local deadline = redis.call('HGET', KEYS[5], 'deadline')
    if deadline then at = tonumber(deadline) end
    local closed_at = redis.call('HGET', KEYS[1], 'closed_at')
    if closed_at then
      local c = math.floor(tonumber(closed_at) * 1000) + close_ttl_ms
      if at == nil or c < at then at = c end
    end
  end
  for _, key in ipairs({KEYS[1], KEYS[2], KEYS[4], KEYS[5]}) do
    if at then redis.call('PEXPIREAT', key, math.max(at, now_ms + 1)) else redis.call('PERSIST', key) end
  end
end
local function drop(marker_ttl_ms, name)
  local last = redis.call('HGET', KEYS[1], 'last_id')
  local source = redis.call('HGET', KEYS[5], 'source') or ''
  redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
  redis.call('ZREM', KEYS[3], name)
  -- The marker tells other nodes' readers, as a delete through ssehub's own interface does.
  redis.call('XADD', KEYS[2], last .. '-2', 'x', 'deleted')
  redis.call('PEXPIRE', KEYS[2], marker_ttl_ms)
  return source
end
"""

_DURABLE_SCRIPTS = {
    # ARGV: now_ms, now, closed, deadline_ms, base, epoch, source, close_ttl_ms, name, number of metadata
    # fields, then metadata field and JSON pairs, then event name and data pairs. Returns {outcome, the source
    # to unpin or '', count, epoch}.
    "create": _DURABLE_LIB
    + """
local released = ''
if redis.call('EXISTS', KEYS[1]) == 1 then
  current()
  if not deleted() and not expired() then return {'exists', '', 0, ''} end
  if deleted() or forks() > 0 then
    redis.call('HSET', KEYS[5], 'deleted', '1')
    return {'gone', '', 0, ''}
  end
  released = redis.call('HGET', KEYS[5], 'source') or ''
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5])
local base = tonumber(ARGV[5])
local nmeta = tonumber(ARGV[10])
local first_event = 11 + 2 * nmeta
local n = (#ARGV - first_event + 1) / 2
redis.call('HSET', KEYS[1], 'last_id', base + n, 'first_id', base + 1, 'status', 'open',
           'created', ARGV[2], 'updated', ARGV[2], 'epoch', ARGV[6])
redis.call('ZADD', KEYS[3], 0, ARGV[9])
for i = 0, nmeta - 1 do redis.call('HSET', KEYS[4], ARGV[11 + 2 * i], ARGV[12 + 2 * i]) end
for i = 0, n - 1 do
  redis.call('XADD', KEYS[2], (base + 1 + i) .. '-0', 'e', ARGV[first_event + 2 * i],
             'd', ARGV[first_event + 2 * i + 1], 't', ARGV[2], 'p', ARGV[6])
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'closed_at', ARGV[2])
  redis.call('XADD', KEYS[2], (base + n) .. '-1', 'x', 'completed')
end
redis.call('HSET', KEYS[5], 'gen', ARGV[6])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[5], 'deadline', ARGV[4]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[5], 'source', ARGV[7]) end
arm(tonumber(ARGV[8]))
return {'created', released, n, ARGV[6]}
""",
    # ARGV: now_ms, now, Stream-Seq or '', producer id or '', epoch, seq, close, renew deadline_ms or '',
    # max_events, close_ttl_ms, then event name and data pairs.
    # Returns {outcome, last_id, closed, first new id, count, epoch, seq, the log's epoch}.
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
    redis.call('HSET', KEYS[5], 'deleted', '1')
    return {'gone', last, closed_n, 0, 0, '', ''}
  end
  return {'not_found', 0, 0, 0, 0, '', ''}
end
local epoch, pseq = '', ''
if ARGV[4] ~= '' then
  local claim_epoch, claim_seq = tonumber(ARGV[5]), tonumber(ARGV[6])
  local stored = redis.call('HGET', KEYS[5], 'p:' .. ARGV[4])
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
  local prior = redis.call('HGET', KEYS[5], 'seq')
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
  redis.call('HSET', KEYS[5], 'seq', ARGV[3])
end
local n = (#ARGV - 10) / 2
for i = 1, n do
  redis.call('XADD', KEYS[2], (last + i) .. '-0', 'e', ARGV[9 + 2 * i], 'd', ARGV[10 + 2 * i], 't', ARGV[2],
             'p', redis.call('HGET', KEYS[1], 'epoch'))
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
if ARGV[4] ~= '' then redis.call('HSET', KEYS[5], 'p:' .. ARGV[4], epoch .. ':' .. pseq) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[5], 'deadline', ARGV[8]) end
arm(tonumber(ARGV[10]))
return {'ok', last, closed_n, first, n, epoch, pseq, redis.call('HGET', KEYS[1], 'epoch')}
""",
    # ARGV: now_ms, deadline_ms, close_ttl_ms.
    "touch": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
current()
if deleted() or expired() then return 0 end
redis.call('HSET', KEYS[5], 'deadline', ARGV[2])
arm(tonumber(ARGV[3]))
return 1
""",
    # ARGV: now_ms, marker_ttl_ms, name. Returns {outcome, the source to unpin or ''}.
    "delete": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', ''} end
current()
if deleted() then return {'gone', ''} end
if forks() > 0 then
  redis.call('HSET', KEYS[5], 'deleted', '1')
  return {expired() and 'not_found' or 'soft', ''}
end
local outcome = expired() and 'not_found' or 'deleted'
return {outcome, drop(tonumber(ARGV[2]), ARGV[3])}
""",
    # ARGV: now_ms, fork, close_ttl_ms. Returns 'none', 'gone' or 'ok'.
    "pin": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'none' end
current()
if deleted() then return 'gone' end
if expired() then
  if forks() == 0 then return 'none' end
  redis.call('HSET', KEYS[5], 'deleted', '1')
  return 'gone'
end
if redis.call('HSETNX', KEYS[5], 'f:' .. ARGV[2], '1') == 1 then redis.call('HINCRBY', KEYS[5], 'forks', 1) end
arm(tonumber(ARGV[3]))
return 'ok'
""",
    # ARGV: now_ms, fork, close_ttl_ms, marker_ttl_ms, name. Returns {1 if this one went, the next source to
    # unpin}.
    "unpin": _DURABLE_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
current()
if redis.call('HDEL', KEYS[5], 'f:' .. ARGV[2]) == 1 then redis.call('HINCRBY', KEYS[5], 'forks', -1) end
if forks() == 0 and (deleted() or expired()) then return {1, drop(tonumber(ARGV[4]), ARGV[5])} end
arm(tonumber(ARGV[3]))
return {0, ''}
""",
}


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _position(entry_id: str) -> tuple[int, int]:
    number, _, kind = entry_id.partition("-")
    return int(number), int(kind)


def _truthy(value: str) -> bool:
    if value.lower() in ("1", "yes", "true", "on"):
        return True
    if value.lower() in ("", "0", "no", "false", "off"):
        return False
    raise InvalidInput(f"?cluster= takes yes or no, not {value[:20]!r}")


@dataclass(eq=False)
class _Follow:
    """A followed topic: its log's key, the last log entry reported, and the epoch of that log (None: not known)."""

    key: str
    cursor: str
    epoch: str | None


#: Seconds between the starts of two XREADs of one reader, per log it follows. An XREAD names every log its
#: reader follows, so what it costs the process (packing, sending and parsing the command) grows with them,
#: and busy topics make it return at once, every few events: in the chat benchmark (500 topics, two workers)
#: the reads took a third of a worker's time. Spaced by this, an event waits at most that long more to be
#: read by the other processes (15 ms with 500 logs followed, 30 us with one); a read that blocked waits
#: for nothing more, and a process's own appends reach its subscribers at once. Chat on two workers: 2,859
#: and 3,136 publishes/s unspaced, 3,992 and 3,992 at 30 us, 4,230 and 4,706 at 100 us.
_XREAD_SPACING = 30e-6


@dataclass(eq=False)
class _Reader:
    """One blocking XREAD loop over its topics' logs and its own wake stream."""

    wake_key: str
    topics: set[str] = field(default_factory=set)
    followed: asyncio.Event = field(default_factory=asyncio.Event)
    wake_cursor: str = "0-0"
    #: A wake-up is on its way and the reader has not re-read its set since: more follows need none.
    wake_pending: bool = False
    task: asyncio.Task[None] | None = None
    client: aioredis.Redis | None = None  # on a cluster, its own connection to the master of its slot
    lost: bool = False  # on a cluster, that connection failed: find the slot's master afresh


class RedisStore(Store):
    shared = True

    def __init__(self, url: str, *, block: float = 10.0, **options: Any) -> None:
        super().__init__(**options)
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        settings = dict(query)
        self.prefix = settings.get("prefix", "ssehub:")
        if not self.prefix or len(self.prefix) > 100 or "{" in self.prefix or "}" in self.prefix:
            raise InvalidInput("the Redis key prefix (?prefix=) must be 1-100 characters, without { or }")
        self.cluster = _truthy(settings.get("cluster", ""))
        try:
            self.max_connections = int(settings.get("max_connections", "50"))
        except ValueError:
            raise InvalidInput("?max_connections= must be an integer") from None
        if not 1 <= self.max_connections <= 10_000:
            raise InvalidInput("?max_connections= must be from 1 to 10000")
        self.durability = settings.get("durability") or None  # what the operator asked for; None: not stated
        if self.durability is not None and self.durability not in DURABILITY_LEVELS:
            raise InvalidInput(
                f"?durability= must be one of {', '.join(DURABILITY_LEVELS)}, not {self.durability[:20]!r}"
            )
        ours = ("prefix", "cluster", "max_connections", "durability")
        self.url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k not in ours])))
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise InvalidInput(f"bad Redis URL: {exc}") from None
        self._where = parts.path if parts.scheme == "unix" else f"{host or 'localhost'}:{port or 6379}"
        self._block_ms = _ms(block)
        self._check_every = block
        self._reconnect_wait = 1.0
        self._queue_wait = 15.0
        try:
            # Commands queue for one of max_connections; the readers' blocking XREADs have their own.
            self._redis = open_client(
                self.url, cluster=self.cluster, socket_timeout=5, max_connections=self.max_connections + GROUPS
            )
            # The reader blocks in XREAD on a connection of its own, longer than any ordinary call. On a
            # cluster each group's reader opens one to the master of its slot, when it first reads.
            self._reader: aioredis.Redis | None = None
            if not self.cluster:
                self._reader = self._node_client(self.url)
        except (ValueError, RedisError) as exc:
            raise InvalidInput(f"bad Redis URL: {exc}") from None
        self._slots = asyncio.Semaphore(self.max_connections)
        #: The topics in the indexes when last counted, and when (for max_topics).
        self._count, self._counted_at = 0, float("-inf")
        self._append_script = self._redis.register_script(_APPEND)
        self._close_script = self._redis.register_script(_CLOSE)
        self._delete_script = self._redis.register_script(_DELETE)
        self._meta_script = self._redis.register_script(_META)
        self._forget_script = self._redis.register_script(_FORGET)
        self._epochs_script = self._redis.register_script(_EPOCHS)
        self._ds_scripts = {name: self._redis.register_script(text) for name, text in _DURABLE_SCRIPTS.items()}
        process = uuid.uuid4().hex
        # One reader for every topic on a single Redis; one per slot group on a cluster.
        self._readers = [
            _Reader(f"{self.prefix}{_TAGS[g]}:wake:{process}") for g in range(GROUPS if self.cluster else 1)
        ]
        self._follows: dict[str, _Follow] = {}
        self._down = False
        self._lost_logs = 0
        self._lost_logged = float("-inf")

    def _node_client(self, url: str) -> aioredis.Redis:
        client = open_client(
            url, cluster=False, socket_timeout=self._block_ms / 1000 + 5, max_connections=1, single_connection=True
        )
        assert isinstance(client, aioredis.Redis)
        return client

    def __repr__(self) -> str:
        cluster = ", cluster=True" if self.cluster else ""
        return f"RedisStore({self._where!r}, prefix={self.prefix!r}{cluster})"

    # -- keys ----------------------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{_TAGS[group_of(name)]}:{kind}:{name}"

    def _topic_key(self, name: str) -> str:
        return self._key("topic", name)

    def _log_key(self, name: str) -> str:
        return self._key("log", name)

    def _meta_key(self, name: str) -> str:
        return self._key("meta", name)

    def _index_key(self, group: int) -> str:
        return f"{self.prefix}{_TAGS[group]}:topics"

    def _keys(self, name: str) -> list[str]:
        """The keys the create path of a script needs: topic, log, the group's index, meta."""
        return [self._topic_key(name), self._log_key(name), self._index_key(group_of(name)), self._meta_key(name)]

    def _reader_of(self, topic: str) -> _Reader:
        return self._readers[group_of(topic) if self.cluster else 0]

    # -- calling Redis -------------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"Redis at {self._where} is unavailable: {exc or type(exc).__name__}")

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise self._error(exc) from None

    async def _do(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` on a free connection; retry it, for a bounded time, only if Redis never ran it.

        A refused connection means Redis is away: retried for a second. A connection that timed out means
        Redis, or this process under a burst, is slow: retried as long as a command may wait for a connection.
        """
        loop = asyncio.get_running_loop()
        began = loop.time()
        delay = 0.02
        while True:
            try:
                async with asyncio.timeout(self._queue_wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise StoreUnavailable(
                    f"Redis at {self._where} is busy: no free connection for {self._queue_wait:g}s"
                ) from None
            try:
                result = await call()
            except _REFUSED as exc:
                wait = self._queue_wait if isinstance(exc, SlowConnect) else self._reconnect_wait
                if loop.time() + delay >= began + wait:
                    self._lost(exc)
                    raise self._error(exc) from None
            except RedisError as exc:
                raise self._error(exc) from None
            else:
                self._back()
                return result
            finally:
                self._slots.release()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _lost(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            log.warning(
                "Redis at %s is unavailable (%s); requests get 503 and streams wait until it answers",
                self._where,
                exc or type(exc).__name__,
            )

    def _back(self) -> None:
        if self._down:
            self._down = False
            log.warning("Redis at %s answers again", self._where)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        # Not fatal: nodes may start before Redis does. Until it answers, calls raise StoreUnavailable
        # (and the first to fail says so in the log, once).
        try:
            await self._redis.ping()
        except RedisError:
            pass
        else:
            for problem in await self.durability_problems():
                log.warning("Redis at %s: %s", self._where, problem)
        for reader in self._readers:
            reader.task = asyncio.create_task(self._read_loop(reader), name="ssehub-redis-reader")

    async def durability_problems(self) -> list[str]:
        """What in this Redis's configuration breaks the durability asked for with `?durability=`.

        With none stated, only what breaks every level (eviction) is reported.
        """
        return await durability_problems(self._redis, self.durability or "none")

    async def check_durability(self) -> None:
        """Refuse a Redis that cannot keep the durability asked for (a Redis that is not up is no refusal).

        A configuration that cannot be read (managed services often forbid CONFIG) is no refusal
        either, only a warning when the store starts: the operator may not be able to change that.
        """
        if self.durability is None:
            return
        try:
            await self._redis.ping()
        except RedisError:
            return
        refusals = [p for p in await self.durability_problems() if not p.endswith("not verified")]
        if refusals:
            raise InvalidInput(
                f"Redis at {self._where} cannot keep durability {self.durability!r}: {'; '.join(refusals)}"
            )

    async def aclose(self) -> None:
        for reader in self._readers:
            if reader.task is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader.task
                reader.task = None
            reader.topics.clear()
        self._follows.clear()
        clients = [self._redis, *(r.client for r in self._readers if r.client is not None)]
        if self._reader is not None:
            clients.append(self._reader)
        for client in clients:
            await client.aclose()
            if isinstance(client, aioredis.Redis):
                await client.connection_pool.aclose()  # given to the client, so not closed by it
        for reader in self._readers:
            reader.client = None

    # -- following ---------------------------------------------------------------------------------------

    async def follow(self, topic: str, after: int, epoch: str | None = None) -> None:
        reader = self._reader_of(topic)
        self._follows[topic] = _Follow(self._log_key(topic), f"{after}-0", epoch)
        reader.topics.add(topic)
        reader.followed.set()
        await self._wake(reader)

    async def unfollow(self, topic: str) -> None:
        # No wake-up: entries of a topic no longer followed are ignored when they arrive.
        self._follows.pop(topic, None)
        self._reader_of(topic).topics.discard(topic)

    async def _wake(self, reader: _Reader) -> None:
        """Wake the reader blocked in XREAD, so that it reads its (changed) set of logs now."""
        if reader.wake_pending:
            return  # one is on its way, and the reader has not read its set since
        reader.wake_pending = True

        async def wake() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(reader.wake_key, {"w": "1"}, maxlen=1, approximate=False)
                pipe.pexpire(reader.wake_key, self._block_ms * 3)
                await pipe.execute()

        with contextlib.suppress(StoreUnavailable):
            await self._do(wake)  # failing, the reader is reconnecting and re-reads its set when it does

    def _replaced(self, topic: str, epoch: str) -> None:
        """The followed log of `topic` is gone: report it, and follow the log `epoch` ('' none yet) from its start."""
        self._follows[topic] = _Follow(self._log_key(topic), "0-0", epoch or None)
        self._announce(topic, epoch)

    def _announce(self, topic: str, epoch: str) -> None:
        self._lost_logs += 1
        now = asyncio.get_running_loop().time()
        if now >= self._lost_logged + 10:  # a flush loses every log at once: one line, not thousands
            self._lost_logged = now
            log.warning(
                "Redis at %s lost the log of topic %r (%d lost so far); its subscribers start again on the new one",
                self._where,
                topic,
                self._lost_logs,
            )
        self._notify(Change(topic, epoch=epoch, reset=True))

    def _saw(self, topic: str, epoch: str) -> bool:
        """A read found `topic`'s log at `epoch`; True (and reported) if that is not the log followed."""
        state = self._follows.get(topic)
        if state is None or state.epoch is None or state.epoch == epoch:
            return False
        self._replaced(topic, epoch)
        return True

    async def _read_loop(self, reader: _Reader) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        check_at = 0.0  # when to compare the epochs of the followed logs: at once, then every block
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # redis-py can swallow the CancelledError of a cancelled XREAD: aclose() would wait forever.
                raise asyncio.CancelledError
            if not reader.topics:
                reader.followed.clear()
                await reader.followed.wait()
                continue
            try:
                if loop.time() >= check_at:
                    await self._check_epochs(reader)
                    check_at = loop.time() + self._check_every
                reader.wake_pending = False
                follows = self._follows
                issued = {follows[t].key: (t, follows[t]) for t in reader.topics}
                started = loop.time()
                reply = await self._xread(reader, {key: state.cursor for key, (_, state) in issued.items()})
            except RedisError as exc:
                self._lost(exc)
                if self.cluster:
                    await self._lose_reader_client(reader)
                check_at = 0.0  # a Redis that restarted may have lost the logs: compare before reading on
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            self._back()
            backoff = 0.05
            items: list[Any] = list(reply.items() if isinstance(reply, dict) else reply or [])
            for key, entries in items:
                if key == reader.wake_key:
                    reader.wake_cursor = entries[-1][0]
                    continue
                topic, state = issued[key]
                if self._follows.get(topic) is state:  # not followed afresh or reset meanwhile
                    self._report(topic, state, entries)
            rest = started + len(issued) * _XREAD_SPACING - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)

    async def _reader_client(self, reader: _Reader) -> aioredis.Redis:
        if self._reader is not None:
            return self._reader
        if reader.client is None:
            # The master of the group's slot, as the cluster client knows it (it follows MOVED replies).
            assert isinstance(self._redis, RedisCluster)
            if reader.lost:  # the slot may have moved (a failover, a resharding): ask the cluster again
                await self._redis.nodes_manager.initialize()
                reader.lost = False
            await self._redis.initialize()
            node = self._redis.get_node_from_key(reader.wake_key)
            if node is None:
                raise ClusterDownError(f"no master serves the slot of {reader.wake_key}")
            parts = urlsplit(self.url)
            userinfo = parts.netloc.rpartition("@")[0]
            netloc = f"{userinfo}@{node.host}:{node.port}" if userinfo else f"{node.host}:{node.port}"
            reader.client = self._node_client(urlunsplit(parts._replace(netloc=netloc)))
        return reader.client

    async def _lose_reader_client(self, reader: _Reader) -> None:
        """After an error on a cluster: the slot may have moved, so the next read asks again where it is."""
        reader.lost = True
        if reader.client is not None:
            client, reader.client = reader.client, None
            with contextlib.suppress(RedisError):
                await client.aclose()
                await client.connection_pool.aclose()

    async def _xread(self, reader: _Reader, cursors: dict[str, str]) -> Any:
        streams: dict[Any, Any] = {**cursors, reader.wake_key: reader.wake_cursor}
        client = await self._reader_client(reader)
        return await client.xread(streams, count=1000, block=self._block_ms)

    async def _check_epochs(self, reader: _Reader) -> None:
        topics = list(reader.topics)
        # What each follow knew when the check was sent: a follow that learned its epoch meanwhile (its topic
        # created by an append of this process, say) knows better than an answer given before that.
        asked = [(state, state.epoch if state else None) for state in map(self._follows.get, topics)]
        keys = [self._topic_key(t) for t in topics] + [self._log_key(t) for t in topics]
        found = await self._epochs_script(keys=keys, args=[], client=await self._reader_client(reader))
        for topic, (state, known), epoch in zip(topics, asked, found, strict=True):
            if state is None or self._follows.get(topic) is not state or state.epoch != known or epoch == "?":
                continue
            if known is None:
                state.epoch = epoch or None
            elif epoch != known:
                self._replaced(topic, epoch)

    def _report(self, topic: str, state: _Follow, entries: list[tuple[str, dict[str, str]]]) -> None:
        events: list[Event] = []
        for entry_id, fields in entries:
            number, _, kind = entry_id.partition("-")
            if _position(entry_id) <= _position(state.cursor):
                continue  # already reported by this process's own append
            epoch = fields.get("p")
            if epoch is not None and epoch != state.epoch:
                if state.epoch is not None:
                    # Another log than the one followed (Redis lost it): report what came before, then
                    # follow the new log from its start; the entries below this one are in it too.
                    if events:
                        self._notify(Change(topic, tuple(events), epoch=state.epoch))
                    self._replaced(topic, epoch)
                    return
                state.epoch = epoch
            state.cursor = entry_id
            if kind == "0":
                events.append(Event(int(number), fields["e"], fields["d"], float(fields["t"])))
            elif kind == "1":
                self._notify(Change(topic, tuple(events), fields["x"], epoch=state.epoch))
                events = []
            else:
                if events:
                    self._notify(Change(topic, tuple(events), epoch=state.epoch))
                # The hub drops its tail and follows afresh if the topic is created again.
                self._follows.pop(topic, None)
                self._reader_of(topic).topics.discard(topic)
                self._notify(Change(topic, deleted=True))
                return
        if events:
            self._notify(Change(topic, tuple(events), epoch=state.epoch))

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
            fields.get("epoch", ""),
        )

    async def append(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        close: str | None = None,
        fingerprint: str | None = None,
    ) -> list[int]:
        now = self.now()
        args: list[Any] = [
            topic,
            repr(now),
            new_epoch(),
            self.max_events,
            _ms(self.key_ttl),
            idempotency_key or "",
            close or "",
            _ms(self.ttl),
            f"{self.prefix}{_TAGS[group_of(topic)]}:key:",
            fingerprint or "",
        ]
        for e in events:
            args += [e.event, e.data]
        await self._check_room_for(topic)
        outcome, value, epoch = await self._do(lambda: self._append_script(keys=self._keys(topic), args=args))
        if self._saw(topic, epoch):
            await self._wake(self._reader_of(topic))  # its XREAD still waits at the old log's end
        if outcome == "conflict":
            raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used with another payload")
        if outcome == "closed":
            raise TopicClosed(f"topic {topic!r} is {value}")
        first, _, count = value.partition(":")
        ids = list(range(int(first), int(first) + int(count)))
        state = self._follows.get(topic)
        if outcome == "ok" and state is not None and state.cursor == f"{ids[0] - 1}-0":
            # Followed here and the reader has reported everything before: report at once, so local
            # subscribers need not wait for the round trip (the reader skips what was reported).
            state.cursor = f"{ids[-1]}-{1 if close else 0}"
            state.epoch = epoch
            stored = tuple(Event(i, e.event, e.data, now) for i, e in zip(ids, events, strict=True))
            self._notify(Change(topic, stored, close, epoch=epoch))
        return ids

    async def read(self, topic: str, after: int, limit: int, max_bytes: int | None = None) -> Page | None:
        # A bound in bytes is kept by reading in steps: a few events first, then as many more as the ones
        # read so far say would fit, so a page of large events never holds many more than it returns.
        count = limit if max_bytes is None else min(limit, 16)

        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(self._topic_key(topic), ["first_id", "last_id", "status", "epoch"])
                pipe.xrange(self._log_key(topic), f"{after + 1}-0", "+", count=count)
                return await pipe.execute()

        bounds, entries = await self._do(run)
        if bounds[0] is None:
            return None
        if self._saw(topic, bounds[3]):
            await self._wake(self._reader_of(topic))
        events = self._events(entries)
        while max_bytes is not None and len(entries) == count and len(events) < limit:
            size = sum(sys.getsizeof(e.data) + len(e.event) for e in events)
            if size >= max_bytes:
                break
            ms, _, seq = entries[-1][0].partition("-")
            start = f"{ms}-{int(seq) + 1}"  # just after the last entry read
            count = min(limit - len(events), 2 * count, (max_bytes - size) * len(events) // max(size, 1) + 1)
            more = functools.partial(self._redis.xrange, self._log_key(topic), start, "+", count=count)
            entries = await self._do(more)
            events += self._events(entries)
        if max_bytes is not None:
            events = page_events(events, max_bytes)
        return Page(events, int(bounds[0]), int(bounds[1]), bounds[2], bounds[3])

    @staticmethod
    def _events(entries: list[Any]) -> list[Event]:
        return [
            Event(int(entry_id.partition("-")[0]), f["e"], f["d"], float(f["t"]))
            for entry_id, f in entries
            if entry_id.endswith("-0")
        ]

    async def info(self, topic: str) -> TopicInfo | None:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._topic_key(topic))
                pipe.hgetall(self._meta_key(topic))
                return await pipe.execute()

        fields, meta = await self._do(run)
        if not fields:
            return None
        info = self._info(topic, fields, meta)
        if self._saw(topic, info.epoch):
            await self._wake(self._reader_of(topic))
        return info

    async def close_topic(self, topic: str, status: str) -> TopicInfo:
        keys = [self._topic_key(topic), self._log_key(topic), self._meta_key(topic)]
        outcome = await self._do(lambda: self._close_script(keys=keys, args=[status, repr(self.now()), _ms(self.ttl)]))
        info = await self.info(topic) if outcome else None
        if info is None:
            raise TopicNotFound(f"no topic {topic!r}")
        state = self._follows.get(topic)
        if outcome == 2 and state is not None and state.cursor == f"{info.last_id}-0" and state.epoch == info.epoch:
            state.cursor = f"{info.last_id}-1"
            self._notify(Change(topic, (), status, epoch=info.epoch))
        return info

    async def delete_topic(self, topic: str) -> bool:
        keys = [self._topic_key(topic), self._log_key(topic), self._meta_key(topic), self._index_key(group_of(topic))]
        found = await self._do(lambda: self._delete_script(keys=keys, args=[topic, self._block_ms * 3]))
        if not found:
            return False
        # Here at once; other nodes learn it from the marker in the log.
        self._follows.pop(topic, None)
        self._reader_of(topic).topics.discard(topic)
        self._notify(Change(topic, deleted=True))
        return True

    async def _names(self, low: str, high: str, limit: int) -> list[str]:
        """The first `limit` names in [low, high] across the groups' indexes, in order."""

        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for group in range(GROUPS):
                    pipe.zrangebylex(self._index_key(group), low, high, 0, limit)
                return await pipe.execute()

        found = await self._do(run)
        return sorted(name for names in found for name in names)[:limit]

    async def _forget(self, names: list[str]) -> int:
        """Drop the names whose topic has expired from their groups' indexes."""
        by_group: dict[int, list[str]] = {}
        for name in names:
            by_group.setdefault(group_of(name), []).append(name)
        gone = 0
        for group, members in by_group.items():
            keys = [self._index_key(group), *(self._topic_key(n) for n in members)]
            gone += await self._do(functools.partial(self._forget_script, keys=keys, args=members))
        return gone

    async def topics(self, prefix: str = "", after: str = "", limit: int = 100) -> list[TopicInfo]:
        # Topic names are ASCII below DEL, so prefix + DEL is above every name that starts with prefix.
        low = f"({after}" if after >= prefix and after else f"[{prefix}" if prefix else "-"
        high = f"({prefix}\x7f" if prefix else "+"
        found: list[TopicInfo] = []
        while len(found) < limit:
            names = await self._names(low, high, limit - len(found))
            if not names:
                break

            async def run(names: list[str] = names) -> list[Any]:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.hgetall(self._topic_key(name))
                        pipe.hgetall(self._meta_key(name))
                    return await pipe.execute()

            replies = await self._do(run)
            expired = []
            for i, name in enumerate(names):
                fields, meta = replies[2 * i], replies[2 * i + 1]
                if fields:
                    found.append(self._info(name, fields, meta))
                else:
                    expired.append(name)
            if expired:
                await self._forget(expired)
            low = f"({names[-1]}"
        return found

    async def update_meta(self, topic: str, meta: dict[str, Any]) -> TopicInfo:
        args: list[Any] = [topic, repr(self.now()), new_epoch()]
        for key, value in meta.items():
            try:
                text = "" if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"metadata {key!r} is not JSON-serialisable: {exc}") from None
            args += [key, text]
        await self._check_room_for(topic)
        await self._do(lambda: self._meta_script(keys=self._keys(topic), args=args))
        info = await self.info(topic)
        if info is None:  # expired in between: as good as deleted
            raise TopicNotFound(f"no topic {topic!r}")
        return info

    async def purge(self) -> int:
        # Closed topics and idempotency keys expire by themselves (PEXPIRE); what is left is
        # to forget the names of expired topics in the listing, and to delete open topics idle too long.
        gone = 0
        cutoff = self.now() - self.idle_ttl
        for group in range(GROUPS):
            low = "-"
            while True:
                page = functools.partial(self._redis.zrangebylex, self._index_key(group), low, "+", 0, 1000)
                names = cast(list[str], await self._do(page))
                if not names:
                    break
                gone += await self._forget(names)
                if self.idle_ttl:
                    gone += await self._delete_idle(names, cutoff)
                low = f"({names[-1]}"
        return gone

    async def _delete_idle(self, names: list[str], cutoff: float) -> int:
        """Delete the open topics of `names` last published to before `cutoff` (not Durable Streams)."""

        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hmget(self._topic_key(name), "status", "updated")
                return await pipe.execute()

        found = await self._do(run)
        gone = 0
        for name, (status, updated) in zip(names, found, strict=True):
            if status != "open" or updated is None or float(updated) > cutoff:
                continue
            # Checked again in the script, atomically: a publish since the read above keeps the topic.
            keys = [self._topic_key(name), self._log_key(name), self._meta_key(name), self._index_key(group_of(name))]
            keys.append(self._key("durable", name))
            args: list[Any] = [name, self._block_ms * 3, repr(cutoff)]
            if await self._do(functools.partial(self._delete_script, keys=keys, args=args)):
                self._gone_here(name)
                gone += 1
        return gone

    async def _check_room_for(self, topic: str) -> None:
        """TooManyTopics when the indexes hold `max_topics` names and `topic` is not one of them. The count is
        cached for a second, so below the cap a publish pays nothing, and processes sharing the store may pass
        the cap by the topics they create within that second."""
        if not self.max_topics:
            return
        now = time.monotonic()
        if now - self._counted_at > 1.0:

            async def run() -> list[Any]:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for group in range(GROUPS):
                        pipe.zcard(self._index_key(group))
                    return await pipe.execute()

            self._count = sum(await self._do(run))
            self._counted_at = now
        if self._count >= self.max_topics and not await self._do(lambda: self._redis.exists(self._topic_key(topic))):
            self._check_room(self._count, topic)

    # -- Durable Streams -------------------------------------------------------------------------------------

    def _stream_keys(self, name: str) -> list[str]:
        return [*self._keys(name), self._key("durable", name)]

    async def _ds(self, script: str, topic: str, args: list[Any]) -> Any:
        keys, argv = self._stream_keys(topic), [_ms(self.now()), *args]
        return await self._do(lambda: self._ds_scripts[script](keys=keys, args=argv))

    def _report_appended(
        self, topic: str, stored: tuple[Event, ...], status: str | None, last_id: int, epoch: str
    ) -> None:
        # As `append` does: followed here and everything before reported, so report at once.
        before = stored[0].id - 1 if stored else last_id
        state = self._follows.get(topic)
        if state is not None and state.cursor == f"{before}-0" and state.epoch in (None, epoch):
            state.cursor = f"{last_id}-{1 if status else 0}"
            state.epoch = epoch
            self._notify(Change(topic, stored, status, epoch=epoch))

    def _gone_here(self, topic: str) -> None:
        """A topic gone here: stop following it and tell the listeners (other nodes learn it from the log)."""
        self._follows.pop(topic, None)
        self._reader_of(topic).topics.discard(topic)
        self._notify(Change(topic, deleted=True))

    async def stream_state(self, topic: str) -> StreamState | None:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._topic_key(topic))
                pipe.hgetall(self._meta_key(topic))
                pipe.hmget(self._key("durable", topic), ["gen", "deadline", "deleted", "forks"])
                return await pipe.execute()

        fields, meta, durable = await self._do(run)
        if not fields:
            return None
        info = self._info(topic, fields, meta)
        gen, deadline, deleted, forks = durable
        if gen != info.epoch:
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
            new_epoch(),
            forked_from or "",
            _ms(self.ttl),
            topic,
            len(meta),
        ]
        for key, value in meta.items():
            args += [key, json.dumps(value, separators=(",", ":"))]
        for e in events:
            args += [e.event, e.data]
        await self._check_room_for(topic)
        outcome, released, _, epoch = await self._ds("create", topic, args)
        state = await self.stream_state(topic)
        if state is None:  # expired or deleted in between: as good as gone
            raise TopicNotFound(f"no topic {topic!r}")
        if outcome != "created":
            return Created(outcome, state)
        ids = tuple(range(base + 1, base + 1 + len(events)))
        stored = tuple(Event(i, e.event, e.data, now) for i, e in zip(ids, events, strict=True))
        if stored or closed:
            self._report_appended(topic, stored, "completed" if closed else None, base + len(stored), epoch)
        return Created("created", state, ids, released or None)

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
        reply = await self._ds("append", topic, args)
        outcome, last_id, closed, first, count, epoch, pseq = reply[:7]
        ids = tuple(range(int(first), int(first) + int(count)))
        if outcome == "ok" and (ids or close):
            stored = tuple(Event(i, e.event, e.data, now) for i, e in zip(ids, events, strict=True))
            self._report_appended(topic, stored, "completed" if close else None, int(last_id), reply[7])
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
        outcome, source = await self._ds("delete", topic, [self._block_ms * 3, topic])
        if outcome in ("deleted", "soft") or source:
            self._gone_here(topic)
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
            dropped, upstream = await self._ds("unpin", source, [fork, _ms(self.ttl), self._block_ms * 3, source])
            if not dropped:
                return
            self._gone_here(source)
            source, fork = upstream, source


# -- durability ----------------------------------------------------------------------------------------------

#: What a Redis can promise about acknowledged events, weakest first (see docs/reliability.md):
#:   none     a restart of Redis may lose the logs (subscribers are told with `event: reset`)
#:   process  a Redis killed or restarted loses nothing acknowledged: appendonly yes
#:   machine  neither does a power loss of its machine: appendonly yes and appendfsync always
DURABILITY_LEVELS = ("none", "process", "machine")


async def durability_problems(client: aioredis.Redis | RedisCluster, wanted: str) -> list[str]:
    """What in this Redis's configuration breaks the durability `wanted` (one of DURABILITY_LEVELS); [] if nothing.

    At every level eviction must be off: an evicted log loses acknowledged events and an evicted
    idempotency key lets a retry be written twice, both silently.
    """
    if wanted not in DURABILITY_LEVELS:
        raise InvalidInput(f"durability must be one of {', '.join(DURABILITY_LEVELS)}, not {wanted!r}")
    names = ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy")
    try:
        # One name per CONFIG GET (Redis before 7 takes only one), one call each (a cluster client
        # pipelines no CONFIG; it asks one node, and every node of a cluster is configured alike).
        replies = [await client.config_get(name) for name in names]
    except RedisError as exc:
        # Managed services often rename or forbid CONFIG: say so rather than guess.
        return [
            f"cannot read the Redis configuration ({exc or type(exc).__name__}): durability {wanted!r} not verified"
        ]
    config: dict[str, str] = {}
    for reply in replies:
        config.update({_text(k): _text(v) for k, v in reply.items()})
    problems = []
    if config.get("maxmemory", "0") != "0" and config.get("maxmemory-policy") != "noeviction":
        problems.append(
            f"maxmemory-policy is {config.get('maxmemory-policy')} with maxmemory {config['maxmemory']}: Redis may "
            "evict topic logs and idempotency keys; set maxmemory-policy noeviction"
        )
    if wanted != "none" and config.get("appendonly") != "yes":
        problems.append(
            "appendonly is no: a restart of Redis loses every event since its last snapshot; set appendonly yes"
        )
    if wanted == "machine" and config.get("appendonly") == "yes" and config.get("appendfsync") != "always":
        problems.append(
            f"appendfsync is {config.get('appendfsync')}: a power loss can lose the last second of acknowledged "
            "events; set appendfsync always"
        )
    return problems


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
