"""The hub: publish into topic logs, and stream them to subscribers as cursors.

    publish --> Store.append --> listener --> Tail(topic).push --> wake
                                                      ^
    subscriber: read everything after my cursor ------+ (or from the store when behind the window),
                write it as one chunk, advance, wait.

There is no per-subscriber queue: a subscriber is an integer cursor and a
task, so a slow client costs nothing but reading further back in the log.
What it holds at once is bounded in bytes (`HubConfig.page_bytes`), and one
whose socket takes no write for `HubConfig.stall_timeout` is cut (it resumes
from its Last-Event-ID): publishing never waits for a reader.
`Subscription.chunks()` writes the tail's cached native frames; `events()` is the
same loop yielding the events themselves, for the readers of the other wire
formats (`ssehub.formats`), which encode them their own way.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import time
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import sse
from .config import HubConfig
from .events import TERMINAL_STATUSES, Event, NewEvent, TopicInfo, validate_topic
from .exceptions import EventTooLarge, InvalidInput, Overloaded, StoreUnavailable, TopicFull, TopicNotFound
from .runs import AgentFunction, RunManager
from .shutdown import on_exit_signals
from .stores import Change, Page, Store, open_store, payload_fingerprint
from .tail import Tail, encode_page

__all__ = ["Gap", "Hub", "Stats", "Subscription", "TopicWriter"]

log = logging.getLogger("ssehub")


@dataclass
class Stats:
    """Counters since the hub started, bumped where things happen (plain integers: the hot paths stay cheap)."""

    events_published: int = 0
    streams_opened: int = 0
    resets_sent: int = 0
    streams_stalled: int = 0


@dataclass(frozen=True, slots=True)
class Gap:
    """Retention dropped events a subscriber asked for: the oldest left is `first_id`; it read up to `after`."""

    first_id: int
    after: int


class Hub:
    """Topic logs in a store, fanned out to any number of subscribers.

    Use it as `async with Hub(...) as hub:`, or let the lifespan of its HTTP
    app start and stop it (`ssehub.asgi.create_app(hub)`). Agents registered
    with `hub.agent(...)` run in its `RunManager`, `hub.runs`.
    """

    def __init__(self, store: str | Store = "memory://", config: HubConfig | None = None, **store_options: Any):
        self.store = open_store(store, **store_options) if isinstance(store, str) else store
        self.config = config or HubConfig()
        self._tails: dict[str, Tail] = {}
        self._tail_bytes = 0  # the sum of the tails' `nbytes`, kept as they change
        self._subscriptions: set[Subscription] = set()  # for the tick's look for stalled writers
        self.stats = Stats()
        self._draining = asyncio.Event()
        self._started = False
        self._purger: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        #: Subscriptions held now (`subscription()`), against HubConfig.max_subscribers.
        self._held = 0
        self.store.add_listener(self._on_change)
        self.runs = RunManager(self)

    def __repr__(self) -> str:
        return f"Hub({self.store!r})"

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        await self.store.start()
        self._started = True
        self._draining = asyncio.Event()
        self._purger = asyncio.create_task(self._purge_loop(), name="ssehub-purge")
        self._ticker = asyncio.create_task(self._tick_loop(), name="ssehub-heartbeat")
        await self.runs.start()

    async def aclose(self) -> None:
        if not self._started:
            return
        self.drain()
        await self.runs.aclose()
        for task in (self._purger, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._purger = self._ticker = None
        await self.store.aclose()
        self._started = False

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start and stop the hub with the server: `FastAPI(lifespan=hub.lifespan)` for a host app that mounts
        it (`create_app(hub)` uses it too).

        It also drains the hub as soon as the server is told to stop (SIGTERM, SIGINT), before the server
        waits for its open connections: see `ssehub.shutdown`.
        """
        async with self:
            with on_exit_signals(self.drain):
                yield

    def drain(self) -> None:
        """Stop: end every open stream with a `retry:` hint so clients reconnect (elsewhere) and resume, and
        begin stopping the runs (they get `HubConfig.run_grace` seconds to finish). Idempotent."""
        if not self._draining.is_set():
            log.info("draining: ending %d stream(s) with a retry hint", self.subscriber_count)
        self._draining.set()
        for tail in self._tails.values():
            tail.wake()
        if self._started:
            self.runs.stop()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    async def check_store(self, timeout: float = 2.0) -> None:
        """Raise StoreUnavailable unless the store answers a cheap read within `timeout` seconds (readiness)."""
        try:
            async with asyncio.timeout(timeout):
                # A topic that never exists: one lookup in every store, and nothing is written.
                await self.store.info("_ssehub/ready")
        except TimeoutError:
            raise StoreUnavailable(f"the store did not answer within {timeout:g}s") from None

    def agent(
        self,
        name: str,
        *,
        timeout: float | None = None,
        max_concurrent: int | None = None,
        validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Callable[[AgentFunction], AgentFunction]:
        """Register `async def agent(run, body) -> result` as `POST /agents/{name}` (see `ssehub.runs`)."""
        return self.runs.agent(name, timeout=timeout, max_concurrent=max_concurrent, validate=validate)

    def asgi(self) -> Any:
        """Deprecated: use `ssehub.asgi.create_app(hub)`. The HTTP app whose lifespan starts and stops this hub."""
        warnings.warn("Hub.asgi() is deprecated: use ssehub.asgi.create_app(hub)", DeprecationWarning, stacklevel=2)
        # Imported by name: the hub sits below the HTTP layer and must not depend on it.
        return importlib.import_module("ssehub.asgi").create_app(self)

    async def _tick_loop(self) -> None:
        # One timer for the whole hub instead of a timeout per subscriber per wait: every quarter
        # heartbeat, idle subscribers wake and send a keep-alive if they have been quiet for three
        # quarters of it (`HubConfig.quiet`), so no silence outlasts the heartbeat. The same tick cuts
        # the subscribers whose socket has taken no write for `stall_timeout`.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.tick)
            for tail in self._tails.values():
                tail.wake()
            deadline = loop.time() - self.config.stall_timeout
            stalled = [sub for sub in self._subscriptions if 0 < sub.writing < deadline]
            for sub in stalled:
                sub.cut()

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.purge_interval)
            try:
                await self.store.purge()
            except StoreUnavailable as exc:  # expected while the store is away: one line, retried
                log.warning("retention sweep: %s; trying again in %gs", exc.message, self.config.purge_interval)
            except Exception:  # a failed sweep is retried at the next interval
                log.exception("retention sweep failed")

    # -- publishing ------------------------------------------------------------------------------------

    def _check(self, events: Sequence[NewEvent]) -> None:
        if not events:
            raise InvalidInput("a batch needs at least one event")
        if len(events) > self.config.max_batch:
            raise InvalidInput(f"a batch holds at most {self.config.max_batch} events, got {len(events)}")
        for e in events:
            if e.size > self.config.max_event_bytes:
                raise EventTooLarge(f"event of {e.size} bytes is above the limit of {self.config.max_event_bytes}")

    async def publish(
        self, topic: str, event: str = "message", data: Any = None, *, idempotency_key: str | None = None
    ) -> int:
        """Publish one event with JSON `data`; returns its id."""
        ids = await self.publish_many(topic, [NewEvent.from_json(event, data)], idempotency_key=idempotency_key)
        return ids[0]

    async def publish_many(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        close: str | None = None,
        fingerprint: str | None = None,
    ) -> list[int]:
        """Append `events` atomically; with `close`, close the topic with that status in the same step.

        An `idempotency_key` remembers a digest of what it appended: a retry with the same events gets
        the first append's ids, a reuse with other events IdempotencyConflict (422). `fingerprint` is that
        digest when the events are not what identifies the request (a run's claim: see `ssehub.runs`).
        """
        validate_topic(topic)
        self._check(events)
        if close is not None and close not in TERMINAL_STATUSES:
            raise InvalidInput(f"status must be one of {sorted(TERMINAL_STATUSES)}")
        digest = None
        if idempotency_key is not None:
            digest = fingerprint or payload_fingerprint(events, close)
        ids = await self.store.append(topic, events, idempotency_key=idempotency_key, close=close, fingerprint=digest)
        self.stats.events_published += len(ids)
        return ids

    def topic(self, name: str, *, close_on_exit: bool = True) -> TopicWriter:
        """A writer for one topic. As `async with`, it closes the topic on exit:
        `completed`, or `failed` when the block raised, or `cancelled` when it was cancelled."""
        return TopicWriter(self, validate_topic(name), close_on_exit)

    # -- topic state --------------------------------------------------------------------------------------

    async def info(self, topic: str) -> TopicInfo:
        info = await self.store.info(validate_topic(topic))
        if info is None:
            raise TopicNotFound(f"no topic {topic!r}")
        return info

    @property
    def subscriber_count(self) -> int:
        return sum(t.subscribers for t in self._tails.values())

    @property
    def tail_bytes(self) -> int:
        """The bytes the tails of the active topics are counted as (at most `HubConfig.tail_total_bytes`)."""
        return self._tail_bytes

    @property
    def active_topics(self) -> int:
        return len(self._tails)

    def subscribers(self, topic: str) -> int:
        tail = self._tails.get(topic)
        return 0 if tail is None else tail.subscribers

    async def close_topic(self, topic: str, status: str = "completed") -> TopicInfo:
        if status not in TERMINAL_STATUSES:
            raise InvalidInput(f"status must be one of {sorted(TERMINAL_STATUSES)}")
        return await self.store.close_topic(validate_topic(topic), status)

    async def delete_topic(self, topic: str) -> None:
        if not await self.store.delete_topic(validate_topic(topic)):
            raise TopicNotFound(f"no topic {topic!r}")

    async def topics(self, prefix: str = "", after: str = "", limit: int = 100) -> list[TopicInfo]:
        return await self.store.topics(prefix, after, limit)

    async def read(self, topic: str, after: int = 0, limit: int = 100, max_bytes: int | None = None) -> Page:
        """Up to `limit` stored events with id > `after` (with `max_bytes`, fewer if their text passes it, but at
        least one), with the topic's bounds; TopicNotFound if none."""
        page = await self.store.read(validate_topic(topic), after, limit, max_bytes)
        if page is None:
            raise TopicNotFound(f"no topic {topic!r}")
        return page

    async def update_meta(self, topic: str, meta: dict[str, Any]) -> TopicInfo:
        """Merge `meta` into the topic's metadata (None removes a key); creates the topic if needed."""
        return await self.store.update_meta(validate_topic(topic), meta)

    async def wait_closed(self, topic: str) -> TopicInfo:
        """Wait until `topic` is closed (or deleted, or this hub drains) and return its state then.

        It holds the topic's tail like a subscriber, but reads nothing: it wakes on the tail's changes only.
        """
        tail = await self._acquire(validate_topic(topic))
        try:
            while not tail.ended and not self.draining:
                await tail.wait()
        finally:
            await asyncio.shield(self._release(tail))
        return await self.info(topic)

    # -- the store's reports ------------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        tail = self._tails.get(change.topic)
        if tail is None:
            return  # nobody here listens: it costs nothing
        before = tail.nbytes
        if change.reset:
            tail.restart(change.epoch or "")  # the log is gone; the events that follow are the new one's
        elif change.epoch and not tail.epoch:
            tail.epoch = change.epoch
        if change.events:
            tail.push(change.events)
        if change.status is not None:
            tail.status = change.status
            tail.wake()
        if change.deleted:
            tail.deleted = True
            # A topic created again under the same name starts a new log: give it a new tail.
            del self._tails[change.topic]
            self._tail_bytes -= before
            tail.wake()
            return
        self._tail_bytes += tail.nbytes - before
        if self._tail_bytes > self.config.tail_total_bytes:
            self._trim_tails()

    def _trim_tails(self) -> None:
        """Bring the tails together down to three quarters of `tail_total_bytes`, largest first.

        The largest tails are lowered to one level, the highest that fits, so a few busy topics give
        up their oldest frames before a quiet one loses any. Those readers read them from the store.
        It runs once per quarter of the total appended, however many topics: publishing stays O(1) amortised.
        """
        goal = self.config.tail_total_bytes * 3 // 4
        tails = sorted(self._tails.values(), key=lambda t: t.nbytes, reverse=True)
        sizes = [t.nbytes for t in tails]
        rest = sum(sizes)  # the bytes of the tails below the level
        level, top = 0, 0
        for top, size in enumerate(sizes, 1):
            rest -= size
            level = (goal - rest) // top
            if top == len(sizes) or level >= sizes[top]:
                break
        for tail in tails[:top]:
            if tail.nbytes > level:
                tail.trim(max(level, 0))
        self._tail_bytes = sum(t.nbytes for t in self._tails.values())

    # -- subscribing --------------------------------------------------------------------------------------

    async def _acquire(self, topic: str) -> Tail:
        tail = self._tails.get(topic)
        if tail is None:
            # Registered before the first await, so no change reported meanwhile is missed.
            tail = self._tails[topic] = Tail(topic, self.config.tail_window, self.config.tail_bytes)
        tail.subscribers += 1
        try:
            if tail.loaded is None:
                tail.loaded = asyncio.get_running_loop().create_future()
                try:
                    info = await self.store.info(topic)
                    if info is not None:
                        tail.last_id = max(tail.last_id, info.last_id)
                        tail.first_id = info.first_id
                        tail.epoch = tail.epoch or info.epoch
                        if info.closed:
                            tail.status = info.status
                    await self.store.follow(topic, tail.last_id, tail.epoch or None)
                except BaseException as exc:
                    tail.loaded.set_exception(exc)
                    tail.loaded.exception()  # retrieved here, so no "never retrieved" warning
                    tail.loaded = None
                    raise
                tail.loaded.set_result(None)
            else:
                await asyncio.shield(tail.loaded)
        except BaseException:
            await self._release(tail)
            raise
        return tail

    async def _release(self, tail: Tail) -> None:
        tail.subscribers -= 1
        if tail.subscribers == 0 and self._tails.get(tail.name) is tail:
            del self._tails[tail.name]
            self._tail_bytes -= tail.nbytes
            await self.store.unfollow(tail.name)

    def subscription(self, topic: str, after: int | None = None) -> AbstractAsyncContextManager[Subscription]:
        """Hold a subscription to `topic`; `after=None` starts at the current end (new events only).

        An async context manager (`async with hub.subscription(topic) as sub:`), as a class rather than a
        generator: every idle subscriber holds one, so it is kept small.
        """
        return _Holding(self, topic, after)

    async def _hold(self, topic: str, after: int | None) -> Subscription:
        validate_topic(topic)
        config = self.config
        if config.max_subscribers and self._held >= config.max_subscribers:
            raise Overloaded(f"this server holds {self._held} subscriptions, the most it takes; retry later")
        if config.max_subscribers_per_topic and self.subscribers(topic) >= config.max_subscribers_per_topic:
            raise TopicFull(
                f"topic {topic!r} has {self.subscribers(topic)} subscribers, the most it takes; retry later"
            )
        self._held += 1
        try:
            tail = await self._acquire(topic)
        except BaseException:
            self._held -= 1
            raise
        self.stats.streams_opened += 1
        sub = Subscription(self, tail, tail.last_id if after is None else after)
        self._subscriptions.add(sub)
        return sub

    async def _let_go(self, sub: Subscription) -> None:
        self._held -= 1
        self._subscriptions.discard(sub)
        await asyncio.shield(self._release(sub.tail))


class _Holding:
    """`Hub.subscription()`: holds a `Subscription` for the body of an `async with`."""

    __slots__ = ("after", "hub", "sub", "topic")

    def __init__(self, hub: Hub, topic: str, after: int | None) -> None:
        self.hub, self.topic, self.after = hub, topic, after
        self.sub: Subscription | None = None

    async def __aenter__(self) -> Subscription:
        self.sub = await self.hub._hold(self.topic, self.after)
        return self.sub

    async def __aexit__(self, *exc: object) -> None:
        if self.sub is not None:
            sub, self.sub = self.sub, None
            await self.hub._let_go(sub)


class Subscription:
    """A cursor over one topic: `chunks()` yields SSE bytes until the topic ends.

    What it did is kept for the access log: `after` (where it started), `events_sent` (how many it sent) and
    `ended`, why `chunks()` stopped: `closed` (the topic ended and was read to its end), `deleted`,
    `draining` (the server is stopping), `store_unavailable`, `auth_expired` (the subscriber's token
    expired), `stalled` (its socket took no write for `stall_timeout`: `cut()`); None while it runs, or
    when the client left.

    While it waits for its reader to take what it yielded, `writing` is when it began to (the loop's
    clock; 0 otherwise): the hub's tick cuts a subscription that has waited longer than `stall_timeout`.

    `direct`, set by the response that writes `chunks()` to a socket, writes bytes there at once, or says it
    cannot (the socket is not taking writes): while `chunks()` waits for the topic, the tail's wake hands
    the new frames to it (`take`) rather than wake the task, and `direct_bytes` counts what it wrote.
    """

    # Slots: every idle subscriber holds one.
    __slots__ = (
        "after",
        "cursor",
        "direct",
        "direct_bytes",
        "ended",
        "events_sent",
        "generation",
        "hub",
        "sent_at",
        "tail",
        "task",
        "until",
        "writing",
    )

    def __init__(self, hub: Hub, tail: Tail, cursor: int) -> None:
        self.hub = hub
        self.tail = tail
        self.cursor = cursor
        self.after = cursor
        self.events_sent = 0
        self.ended: str | None = None
        self.generation = tail.generation
        self.writing = 0.0
        #: The task that writes it to a socket, set by that writer (an HTTP response) so that `cut()` can end it;
        #: None (a subscription read in code of its own) is never cut.
        self.task: asyncio.Task[Any] | None = None
        self.direct: Callable[[bytes], bool] | None = None
        self.direct_bytes = 0
        #: When `chunks()` last wrote (the loop's clock): a keep-alive goes out after `quiet` seconds of it.
        self.sent_at = 0.0
        #: The `until` of `chunks()`.
        self.until: float | None = None

    def cut(self) -> None:
        """End a stream whose socket has stopped draining: cancel the task that writes it.

        The write that waits is abandoned: the client got every event up to its Last-Event-ID and
        resumes from there when it reconnects. The response that owns the task tells this cancel
        from any other by `ended == "stalled"` (see `ssehub.asgi.subscriptions`).
        """
        if self.task is not None and self.ended is None:
            log.info("stream of %r stalled for %gs: cut", self.tail.name, self.hub.config.stall_timeout)
            self.ended = "stalled"
            self.hub.stats.streams_stalled += 1
            self.task.cancel()

    def stalled(self) -> bool:
        """Whether `cut()` ended it; the cancel it sent is then taken back, so the task can finish normally."""
        if self.ended != "stalled" or self.task is None or self.task is not asyncio.current_task():
            return False
        self.task.uncancel()
        return True

    @property
    def finished(self) -> bool:
        """Everything of an ended topic has been read: a reconnect here would get nothing more.

        A cursor beyond the end is not finished: it belongs to a log this one is not, and gets a reset.
        """
        return self.tail.ended and self.cursor == self.tail.last_id

    def _reset(self, first_id: int) -> bytes:
        # The reset frame carries id first_id - 1, so a reconnect from it asks for exactly what exists.
        frame = sse.encode(
            json.dumps({"first_id": first_id, "requested_after": self.cursor}), event="reset", id=first_id - 1
        )
        self.cursor = first_id - 1
        self.hub.stats.resets_sent += 1
        return frame

    async def sync(self, cursor: int) -> bool:
        """Before reading from `cursor`: make sure the tail agrees with the store; False if the store is away.

        With a shared store, another node may have appended what this one's follower has not reported
        yet; and a tail that other subscribers keep loaded may still describe a log the store has since
        lost (a Redis restarted without its data), which its follower only notices with the next write:
        then the tail starts over on the new log, and the reader gets a reset rather than a 204.
        """
        tail = self.tail
        if not self.hub.store.shared or tail.deleted or (cursor <= tail.last_id and not tail.ended):
            return True
        try:
            info = await self.hub.store.info(tail.name)
        except StoreUnavailable:
            return False
        if info is None or (tail.epoch and info.epoch and info.epoch != tail.epoch):
            if tail.last_id or tail.ended:
                self.hub._tail_bytes -= tail.nbytes  # a restart empties the tail
                tail.restart(info.epoch if info is not None else "")
        else:
            tail.last_id = max(tail.last_id, info.last_id)
        return True

    def take(self) -> bool:
        """The tail's wake while `chunks()` waits (`Tail.wait`): write what is new through `direct` and wait on.

        False, to wake `chunks()` instead, whenever it has more to do than write frames: nothing new (the
        tick: perhaps a keep-alive is due), the topic ended or replaced, the hub draining, the credentials
        expired, frames gone from the tail, or a socket that cannot take them now (it is then written as
        any other, awaiting the socket, where a stall is seen and cut).
        """
        tail, direct = self.tail, self.direct
        if direct is None or tail.ended or self.generation != tail.generation or self.hub.draining:
            return False
        if self.until is not None and time.time() >= self.until:
            return False
        page_bytes, wrote = self.hub.config.page_bytes, False
        # A chunk is at most `page_bytes`: what is left after one is written too, while the socket takes it.
        while (got := tail.after(self.cursor, page_bytes)) is not None and got[0]:
            chunk, cursor = got
            try:
                if not direct(chunk):
                    return False
            except Exception:  # it runs in the tail's callback, among other subscribers: never stop that
                log.exception("writing the stream of %r failed", tail.name)
                return False
            self.events_sent += cursor - self.cursor
            self.cursor = cursor
            self.direct_bytes += len(chunk)
            self.sent_at = asyncio.get_running_loop().time()
            wrote = True
        return wrote

    def expired(self) -> bytes:
        """The frame that ends a stream whose credentials expired: `event: auth_expired` with a `retry:` hint.

        No id: the client's Last-Event-ID stays that of the last event it read, so it resumes from there.
        """
        data = json.dumps({"message": "the token has expired: reconnect with a fresh one", "last_id": self.cursor})
        return sse.encode(data, event="auth_expired", retry=self.hub.config.retry_ms)

    async def chunks(self, until: float | None = None) -> AsyncIterator[bytes]:
        """SSE bytes until the topic ends, the hub drains, or `until` (seconds since the epoch: when the
        subscriber's credentials expire) passes; then an `auth_expired` event with a `retry:` hint ends it.

        `until` is checked whenever the subscriber wakes: for each batch of events, and at least every
        quarter heartbeat on the hub's one clock (`HubConfig.tick`), so an idle stream ends at most that late.
        A chunk is at most `page_bytes` (or one event, if larger), so a reader holds at most that at once.
        """
        hub, tail, config = self.hub, self.tail, self.hub.config
        loop = asyncio.get_running_loop()
        self.until, self.sent_at = until, loop.time()
        if not await self.sync(self.cursor):
            self.ended = "store_unavailable"
            yield sse.encode_retry(config.retry_hint())
            return
        if self.cursor > tail.last_id:
            # Beyond the end (the topic was deleted and created again, or never existed): start over, said aloud.
            yield self._reset(tail.first_id if tail.last_id else 1)
        while not hub.draining:
            if until is not None and time.time() >= until:
                self.ended = "auth_expired"
                yield self.expired()
                return
            if self.generation != tail.generation:
                # The store lost the log this cursor counts in (a Redis without persistence restarted):
                # start again on the new log, said aloud, instead of skipping its first ids.
                self.generation = tail.generation
                if self.cursor:
                    yield self._reset(1)
            got = tail.after(self.cursor, config.page_bytes)
            if got is None:
                try:
                    page = await hub.store.read(tail.name, self.cursor, config.page_size, config.page_bytes)
                except StoreUnavailable:
                    self.ended = "store_unavailable"
                    break  # the client reconnects after the retry hint and resumes from its cursor
                if page is None:  # deleted meanwhile
                    self.ended = "deleted"
                    return
                if self.generation != tail.generation:
                    continue  # the read found the new log: reset first
                if page.first_id > self.cursor + 1:
                    yield self._reset(page.first_id)
                    continue
                if page.events:
                    chunk, count = encode_page(page.events, config.page_bytes)
                    self.cursor = page.events[count - 1].id
                    del page  # the chunk alone is held while it is written
                    self.writing = loop.time()
                    yield chunk
                    self.writing = 0.0
                    self.events_sent += count  # counted once written: a cut write is not
                    self.sent_at = loop.time()
                    continue
                got = (b"", self.cursor)
            chunk, cursor = got
            if chunk:
                # Ids are consecutive within the window: the count is the cursor's step.
                count, self.cursor = cursor - self.cursor, cursor
                self.writing = loop.time()
                yield chunk
                self.writing = 0.0
                self.events_sent += count
                self.sent_at = loop.time()
                continue
            if tail.ended:
                self.ended = "deleted" if tail.deleted else "closed"
                return
            if loop.time() - self.sent_at >= config.quiet:
                self.writing = loop.time()
                yield b": keep-alive\n\n"
                self.writing = 0.0
                self.sent_at = loop.time()
            await tail.wait(self if self.direct is not None else None)
        self.ended = self.ended or "draining"
        yield sse.encode_retry(config.retry_hint())

    async def events(self, until: float | None = None) -> AsyncGenerator[Sequence[Event] | Gap, None]:
        """The events after the cursor, as `chunks()` reads them, for a reader that encodes them itself.

        Yields events in id order (at most a page at a time), a `Gap` where retention dropped
        what was asked for (the cursor moves to just before it), and an empty tuple each time
        it has read everything and is about to wait (the reader's moment for a keep-alive).
        It ends when the topic has ended and everything was read (`finished`), when the
        topic is deleted, and when the hub drains or the store is away (the reader should
        then send a retry hint), and at `until` (the reader's credentials expire: `ended` is then
        `auth_expired`). Unlike `chunks()`, it leaves a cursor beyond the end to the reader.
        """
        hub, tail, limit, max_bytes = self.hub, self.tail, self.hub.config.page_size, self.hub.config.page_bytes
        loop = asyncio.get_running_loop()
        if not await self.sync(self.cursor):
            self.ended = "store_unavailable"
            return
        while not hub.draining:
            if until is not None and time.time() >= until:
                self.ended = "auth_expired"
                return
            if self.generation != tail.generation:
                # The store lost the log this cursor counts in: the new log from its start, said aloud.
                self.generation = tail.generation
                if self.cursor:
                    gap = Gap(1, self.cursor)
                    self.cursor = 0
                    hub.stats.resets_sent += 1
                    yield gap
            got = tail.events_after(self.cursor, limit, max_bytes)
            if got is None:
                try:
                    page = await hub.store.read(tail.name, self.cursor, limit, max_bytes)
                except StoreUnavailable:
                    self.ended = "store_unavailable"
                    return
                if page is None:  # deleted meanwhile
                    self.ended = "deleted"
                    return
                if self.generation != tail.generation:
                    continue  # the read found the new log: the gap first
                if page.first_id > self.cursor + 1:
                    gap = Gap(page.first_id, self.cursor)
                    self.cursor = page.first_id - 1
                    hub.stats.resets_sent += 1
                    yield gap
                    continue
                got = page.events
                del page
            if got:
                self.cursor = got[-1].id
                self.writing = loop.time()
                yield got
                self.writing = 0.0
                self.events_sent += len(got)
                del got
                continue
            if tail.ended:
                self.ended = "deleted" if tail.deleted else "closed"
                return
            self.writing = loop.time()
            yield ()
            self.writing = 0.0
            await tail.wait()
        self.ended = self.ended or "draining"


class TopicWriter:
    """Publishes to one topic; `hub.topic(name)`."""

    def __init__(self, hub: Hub, name: str, close_on_exit: bool) -> None:
        self.hub = hub
        self.name = name
        self.close_on_exit = close_on_exit

    async def publish(self, event: str = "message", data: Any = None, *, idempotency_key: str | None = None) -> int:
        return await self.hub.publish(self.name, event, data, idempotency_key=idempotency_key)

    async def publish_many(self, events: Sequence[NewEvent], *, idempotency_key: str | None = None) -> list[int]:
        return await self.hub.publish_many(self.name, events, idempotency_key=idempotency_key)

    async def close(self, status: str = "completed") -> TopicInfo:
        return await self.hub.close_topic(self.name, status)

    async def __aenter__(self) -> TopicWriter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.close_on_exit:
            return
        if exc_type is None:
            status = "completed"
        elif issubclass(exc_type, asyncio.CancelledError):
            status = "cancelled"
        else:
            status = "failed"
        with contextlib.suppress(TopicNotFound):
            await asyncio.shield(self.hub.close_topic(self.name, status))
