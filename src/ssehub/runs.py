r"""Agent runs: a registered async function, run in the background, its events in a topic.

    POST /agents/chat --> RunManager.start --> topic runs/{id} (meta: agent, status, owner)
                                          \--> task: agent(run, body) --> run.text() / emit() --> outbox --> topic
                                                     returns / raises / is cancelled --> done, error, cancelled + close

A run is owned by the hub (its `RunManager`), never by the HTTP request that
started it: a client that goes away can resume the run's topic later. The
terminal event and the close of the topic are one atomic append, and the
topic's status is the run's status, so a reader can never see one without the
other. The run's metadata records its owner (host, pid, boot id) and a lease
the owner renews; a `running` run whose owner is gone is marked `failed` the
next time anyone looks at it (and by a sweep when the hub starts).

`emit(event, data)` publishes to the current run from anywhere in the agent's
call tree, child tasks included (a context variable), and is a no-op outside a
run. It only queues the event: the run's writer task appends queued events in
order, in batches, so a slow store never blocks the caller and a gone client
never matters at all.

This module sits below the hub: the run manager is written against `Publisher`,
the few public methods of a hub it needs, so every write a run makes goes
through the hub's checks and statistics, and nothing here knows the hub's type.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from .config import HubConfig
from .events import NewEvent, TopicInfo
from .exceptions import (
    EventTooLarge,
    InvalidInput,
    SSEHubError,
    StoreUnavailable,
    TooManyRequests,
    TopicClosed,
    TopicNotFound,
)
from .logs import log_fields
from .stores import Page, payload_fingerprint

__all__ = [
    "RUN_PREFIX",
    "Agent",
    "AgentFunction",
    "Publisher",
    "Run",
    "RunManager",
    "ToolCall",
    "current_run",
    "emit",
    "run_document",
]

log = logging.getLogger("ssehub.runs")

AgentFunction = Callable[["Run", dict[str, Any]], Awaitable[Any]]

RUN_PREFIX = "runs/"
T = TypeVar("T")

#: Seconds a run waits out a store that is away (a Redis restarting, a failover) before it fails.
STORE_PATIENCE = 30.0
_HOST = socket.gethostname()

_current: ContextVar[Run | None] = ContextVar("ssehub_run", default=None)


def current_run() -> Run | None:
    """The run whose agent is executing this code, or None."""
    return _current.get()


def emit(event: str, data: Any = None) -> None:
    """Publish `event` with JSON `data` to the current run; a no-op outside a run.

    It never waits and never raises because of the store or a client: the event is
    queued and written in order by the run's writer. Bad input (an invalid event
    name, data that is not JSON) is a bug in the caller and does raise InvalidInput.
    """
    run = _current.get()
    if run is not None:
        run.emit(event, data)


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    function: AgentFunction
    #: Seconds a run may take before it fails; None for no limit.
    timeout: float | None = None
    #: Runs of this agent at once in this process; beyond it, TooManyRequests (429).
    max_concurrent: int | None = None
    #: Checks (and may normalise) the body before a run starts; raise InvalidInput for a 400.
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class Publisher(Protocol):
    """What runs need of a hub (`ssehub.Hub` is one): its settings, and publishing and reading topics."""

    @property
    def config(self) -> HubConfig: ...

    @property
    def draining(self) -> bool: ...

    async def publish_many(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        close: str | None = None,
        fingerprint: str | None = None,
    ) -> list[int]: ...

    async def info(self, topic: str) -> TopicInfo: ...

    async def read(self, topic: str, after: int = 0, limit: int = 100) -> Page: ...

    async def topics(self, prefix: str = "", after: str = "", limit: int = 100) -> list[TopicInfo]: ...

    async def update_meta(self, topic: str, meta: dict[str, Any]) -> TopicInfo: ...

    async def wait_closed(self, topic: str) -> TopicInfo: ...


@dataclass(slots=True)
class ToolCall:
    """One call of a tool.

    `async with run.tool(...) as call` yields one: set `call.result` before the block ends. The
    calls a model asks for (`ssehub.llm.stream_chat`) come back as ToolCalls too, with the model's
    own `call_id` and parsed `args`; `run.tool(call)` then runs one under that id.
    """

    call_id: str
    tool: str
    args: Any = None
    result: Any = None


class Run:
    """One execution of an agent: the object the agent function gets as its first argument."""

    def __init__(self, manager: RunManager, agent: Agent, run_id: str, body: dict[str, Any]) -> None:
        self.manager = manager
        self.hub = manager.hub  # the Publisher that stores this run's events
        self.agent = agent
        self.id = run_id
        self.topic = RUN_PREFIX + run_id
        self.body = body
        self.status = "running"
        self.result: Any = None
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.finished = asyncio.get_running_loop().create_future()
        self._ids = itertools.count(1)
        # The outbox: events queued in call order, with the futures of the callers that await them.
        self._queue: list[tuple[NewEvent | None, asyncio.Future[None] | None]] = []
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._open = True
        self._cancel_reason: str | None = None
        self._started = False
        self._terminal = False
        #: For the run's log line: events stored, and when it began (monotonic seconds).
        self.events = 0
        #: The last id of the run's log: its length, as nobody else writes to it (not `events` once a log was lost).
        self._log_end = 0
        #: What the run's metadata says of it whatever happens: its agent, and what it was started with.
        self.identity: dict[str, Any] = {"agent": agent.name}
        self._began = time.monotonic()

    def __repr__(self) -> str:
        return f"<Run {self.id} agent={self.agent.name!r} status={self.status}>"

    # -- what an agent calls -------------------------------------------------------------------------------

    async def text(self, content: str) -> None:
        """A piece of the answer: `text_delta {"content"}`."""
        await self.message({"content": content}, event="text_delta")

    async def reasoning(self, content: str) -> None:
        """A piece of the model's reasoning, shown apart from the answer: `reasoning_delta {"content"}`."""
        await self.message({"content": content}, event="reasoning_delta")

    async def progress(self, percent: float, message: str = "") -> None:
        await self.message({"percent": percent, "message": message}, event="progress")

    async def message(self, data: Any = None, *, event: str = "message") -> None:
        """Publish any event; returns once it is stored."""
        fut = asyncio.get_running_loop().create_future()
        self._enqueue(NewEvent.from_json(event, data), fut)
        await fut

    def emit(self, event: str, data: Any = None) -> None:
        """Queue an event without waiting for it to be stored (see `ssehub.emit`)."""
        self._enqueue(NewEvent.from_json(event, data), None)

    @contextlib.asynccontextmanager
    async def tool(self, name: str | ToolCall, args: Any = None) -> AsyncIterator[ToolCall]:
        """`tool_start`, then `tool_result` with `call.result`, or with the error if the block raised.

        `name` may be a `ToolCall` a model asked for: its id, name and arguments are used as they are.
        """
        call = name if isinstance(name, ToolCall) else ToolCall(f"call_{next(self._ids)}", name, args)
        await self.message({"call_id": call.call_id, "tool": call.tool, "args": call.args}, event="tool_start")
        try:
            yield call
        except Exception as exc:
            self.emit("tool_result", {"call_id": call.call_id, "tool": call.tool, "error": _safe_message(exc)})
            raise
        await self.message({"call_id": call.call_id, "tool": call.tool, "result": call.result}, event="tool_result")

    @contextlib.asynccontextmanager
    async def step(self, name: str, **data: Any) -> AsyncIterator[None]:
        """`step_start {"step", ...}`, then `step_end` (with "error" if the block raised)."""
        await self.message({"step": name, **data}, event="step_start")
        try:
            yield
        except Exception as exc:
            self.emit("step_end", {"step": name, "error": _safe_message(exc)})
            raise
        await self.message({"step": name}, event="step_end")

    # -- the outbox --------------------------------------------------------------------------------------------

    def _enqueue(self, event: NewEvent, fut: asyncio.Future[None] | None) -> None:
        if not self._open:
            # The run has ended (e.g. a child task outlived it): nothing may follow the terminal event.
            log.debug("run %s: dropped %r emitted after the run ended", self.id, event.event)
            if fut is not None:
                fut.set_result(None)
            return
        self._queue.append((event, fut))
        self._queued.set()

    async def _write_loop(self) -> None:
        max_batch = self.hub.config.max_batch
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch, self._queue = self._queue[:max_batch], self._queue[max_batch:]
                try:
                    events = [e for e, _ in batch if e is not None]
                    if events:
                        ids = await self._append(events)
                        if ids[0] != self._log_end + 1:  # nobody else writes here: the log was lost meanwhile
                            await self.manager.restore(self)
                        self._log_end = ids[-1]
                        self.events += len(events)
                except TopicClosed:
                    # Cancelled (or failed) by another process meanwhile: stop the agent too.
                    self._open = False
                    self._settle(batch + self._queue, None)
                    self._queue.clear()
                    if self.task is not None and not self._terminal:
                        self._cancel_reason = self._cancel_reason or "closed elsewhere"
                        self.task.cancel()
                    return
                except Exception as exc:
                    log.warning("run %s: could not store %d event(s): %s", self.id, len(batch), exc)
                    self._settle(batch, exc)
                else:
                    self._settle(batch, None)

    @staticmethod
    def _settle(batch: list[tuple[NewEvent | None, asyncio.Future[None] | None]], exc: Exception | None) -> None:
        for _, fut in batch:
            if fut is not None and not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

    async def _flush(self) -> None:
        """Wait until everything queued so far is written (a barrier: an entry with no event)."""
        if self._writer is None or self._writer.done():
            return
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((None, fut))
        self._queued.set()
        with contextlib.suppress(Exception):
            await fut

    # -- execution ----------------------------------------------------------------------------------------------

    async def _execute(self) -> None:
        self._started = True
        token = _current.set(self)
        self._writer = asyncio.create_task(self._write_loop(), name=f"ssehub-run-writer-{self.id}")
        task = asyncio.current_task()
        assert task is not None
        deadline = asyncio.timeout(self.agent.timeout)
        try:
            if self._cancel_reason is not None:
                raise asyncio.CancelledError  # cancelled before the task first ran
            async with deadline:
                self.result = await self.agent.function(self, self.body)
            status, terminal = "completed", self._done()
        except asyncio.CancelledError:
            if task.cancelling():
                task.uncancel()
            if self._cancel_reason == "shutdown":
                status, self.error = "failed", "the server stopped before the run finished"
                terminal = NewEvent.from_json("error", {"message": self.error})
            else:
                status = "cancelled"
                terminal = NewEvent.from_json("cancelled", {"reason": self._cancel_reason or "cancelled"})
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                self.error = f"the run took longer than {self.agent.timeout:g} s"
            elif isinstance(exc, EventTooLarge):
                self.error = exc.message  # the agent's result: nothing to trace
            else:
                # The traceback goes to the server log; the client gets a message that reveals no internals.
                log.exception("run %s of agent %r failed", self.id, self.agent.name)
                self.error = _safe_message(exc)
            status, terminal = "failed", NewEvent.from_json("error", {"message": self.error})
        finally:
            _current.reset(token)
        self._terminal = True
        await self._finish(status, terminal)

    def _done(self) -> NewEvent:
        """The `done` event of the result; EventTooLarge for a result above `HubConfig.max_result_bytes`."""
        done = NewEvent.from_json("done", {"result": self.result})
        limit = self.manager.hub.config.max_result_bytes
        size = len(done.data.encode())
        if size > limit:
            self.result = None
            raise EventTooLarge(f"the run's result of {size} bytes (as JSON) is above the limit of {limit}")
        return done

    async def _finish(self, status: str, terminal: NewEvent) -> None:
        try:
            await self._flush()
            self._open = False
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
            self.status = await self._store_end(status, terminal)
        finally:
            self._open = False
            if not self.finished.done():
                self.finished.set_result(None)
        log_fields(
            log,
            "run",
            id=self.id,
            agent=self.agent.name,
            status=self.status,
            events=self.events + 1,  # and the terminal one
            seconds=time.monotonic() - self._began,
            error=self.error,
        )

    async def _store_end(self, status: str, terminal: NewEvent) -> str:
        """The result in the metadata, then the terminal event and the close in one append; the final status."""
        try:
            # Who the run is, again: the log may have been lost since the run began (see RunManager.restore).
            meta: dict[str, Any] = {**self.identity, "status": status, "updated": time.time()}
            if status == "completed":
                meta["result"] = self.result
            if self.error is not None:
                meta["error"] = self.error
            await self._patiently(lambda: self.hub.update_meta(self.topic, meta))
            await self._append([terminal], close=status)
            return status
        except TopicClosed:
            return await self.manager.status_of(self.topic, status)
        except Exception as exc:
            # E.g. a result too large to store: the run must still end, so it fails, said aloud.
            log.exception("run %s: could not store its end", self.id)
            self.error = exc.message if isinstance(exc, SSEHubError) else "the run's end could not be stored"
            with contextlib.suppress(Exception):
                await self.hub.publish_many(
                    self.topic, [NewEvent.from_json("error", {"message": self.error})], close="failed"
                )
                await self.hub.update_meta(self.topic, {**self.identity, "status": "failed", "error": self.error})
            return "failed"

    async def _append(self, events: list[NewEvent], close: str | None = None) -> list[int]:
        """Append to the run's log, waiting out a store that is away (see `_patiently`).

        A failed call may still have appended (the answer was what got lost). Nobody else writes
        to a run's topic, so the log's length says whether it did, without an idempotency key
        per batch on the hot path.
        """
        first = self._log_end + 1
        appended = False

        async def attempt() -> list[int]:
            nonlocal appended
            if appended:
                with contextlib.suppress(TopicNotFound):  # not found: the log was lost, append afresh
                    if (await self.hub.info(self.topic)).last_id >= first + len(events) - 1:
                        return list(range(first, first + len(events)))
            appended = True
            return await self.hub.publish_many(self.topic, events, close=close)

        return await self._patiently(attempt)

    @staticmethod
    async def _patiently(call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, again after StoreUnavailable for up to STORE_PATIENCE seconds, backing off."""
        deadline = time.monotonic() + STORE_PATIENCE
        delay = 0.1
        while True:
            try:
                return await call()
            except StoreUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def cancel(self, reason: str = "cancelled by the client") -> bool:
        """Ask the agent's task to stop; False if the run is already ending."""
        if self._terminal or self.task is None or self.task.done():
            return False
        self._cancel_reason = reason
        if self._started:
            self.task.cancel()
        # else: a task cancelled before its first step would never run its own clean-up;
        # `_execute` sees the reason as soon as it starts instead.
        return True


def _check_meta(meta: dict[str, Any], limit: int) -> None:
    """Refuse run metadata that is not JSON text UTF-8 can encode, or above `limit` bytes as JSON."""
    try:
        size = len(NewEvent.from_json("meta", meta).data.encode())
    except InvalidInput as exc:
        raise InvalidInput(f"the run's metadata: {exc.message}") from None
    if size > limit:
        raise EventTooLarge(f"the run's metadata of {size} bytes (as JSON) is above the limit of {limit}")


def _safe_message(exc: BaseException) -> str:
    # Our own errors (AgentError included) carry messages meant for clients; any other could leak internals.
    if isinstance(exc, SSEHubError):
        return exc.message
    return "the agent failed"


def run_document(info: TopicInfo, prefix: str = "") -> dict[str, Any]:
    """What `GET /runs/{id}` answers; `prefix` is where the hub is mounted."""
    run_id = info.name[len(RUN_PREFIX) :]
    meta = info.meta
    status = info.status if info.closed else "running"
    return {
        "id": run_id,
        "agent": meta.get("agent"),
        "status": status,
        "result": meta.get("result") if status == "completed" else None,
        "error": {"message": meta.get("error", "")} if status == "failed" else None,
        "created": info.created,
        "updated": max(info.updated, float(meta.get("updated", 0.0))),
        "events_url": f"{prefix}/runs/{run_id}/events",
    }


class RunManager:
    """The agents of a hub and their runs in this process."""

    def __init__(self, hub: Publisher, *, lease: float = 30.0) -> None:
        self.hub = hub
        self.agents: dict[str, Agent] = {}
        self.runs: dict[str, Run] = {}
        self.lease = lease
        self.boot = secrets.token_hex(8)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stopper: asyncio.Future[None] | None = None

    def register(self, agent: Agent) -> None:
        if not agent.name or "/" in agent.name or len(agent.name) > 100:
            raise ValueError(f"invalid agent name {agent.name!r}")
        self.agents[agent.name] = agent

    def agent(
        self,
        name: str,
        *,
        timeout: float | None = None,
        max_concurrent: int | None = None,
        validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Callable[[AgentFunction], AgentFunction]:
        def decorate(function: AgentFunction) -> AgentFunction:
            self.register(Agent(name, function, timeout, max_concurrent, validate))
            return function

        return decorate

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._spawn(self._lease_loop(), "ssehub-run-leases")
        self._spawn(self._sweep(), "ssehub-run-sweep")

    def stop(self) -> None:
        """Begin stopping (once): no new run starts; the running ones get `HubConfig.run_grace` seconds to
        finish on their own, then are cancelled and end `failed` ("the server stopped"), so none is left
        running. `aclose` waits for it; a server calls this as soon as it is told to stop, so that requests
        waiting for a run's result get it while the server still waits for its connections."""
        self._stopping = True
        if self._stopper is None:
            self._stopper = asyncio.ensure_future(self._stop_runs())
            self._stopper.set_name("ssehub-run-stop")

    async def _stop_runs(self) -> None:
        runs = list(self.runs.values())
        grace = self.hub.config.run_grace
        if runs and grace > 0:
            log.info("waiting up to %gs for %d run(s) to finish", grace, len(runs))
            await asyncio.wait([r.finished for r in runs], timeout=grace)
            runs = [r for r in runs if not r.finished.done()]
        for run in runs:
            run.cancel("shutdown")
        if runs:
            await asyncio.wait([r.finished for r in runs], timeout=10)

    async def aclose(self) -> None:
        """Stop every run of this process (see `stop`) and the manager's own tasks."""
        self.stop()
        assert self._stopper is not None
        await asyncio.shield(self._stopper)
        self._stopper = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _running_meta(self, run: Run) -> dict[str, Any]:
        return {**run.identity, "status": "running", "updated": time.time(), "owner": self._owner()}

    async def restore(self, run: Run) -> None:
        """The store lost `run`'s log (a Redis restarted without its data) and its events go on in a new one:
        write the run's metadata again, so the run can still be found, read (from a reset) and cancelled."""
        log.warning("run %s: its log was lost with the store's data; it goes on in a new log", run.id)
        await self.hub.update_meta(run.topic, self._running_meta(run))

    def _owner(self) -> dict[str, Any]:
        return {"host": _HOST, "pid": os.getpid(), "boot": self.boot, "lease": time.time() + self.lease}

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            for run in list(self.runs.values()):
                if run._terminal:
                    continue
                try:
                    info = await self.hub.update_meta(run.topic, {"owner": self._owner()})
                    if info.closed:  # cancelled from another process
                        run.cancel("cancelled")
                except Exception as exc:
                    log.warning("run %s: could not renew its lease: %s", run.id, exc)

    async def _sweep(self) -> None:
        """Mark the runs that died with their process as failed; while the store is away, try again later."""
        delay = 1.0
        while True:
            try:
                await self._sweep_once()
                return
            except StoreUnavailable:
                # Expected when the store starts after us (it says so itself, once): wait for it and try again.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _sweep_once(self) -> None:
        after = ""
        while True:
            page = await self.hub.topics(RUN_PREFIX, after, 500)
            for info in page:
                if not info.closed:
                    await self.check(info)
            if len(page) < 500:
                return
            after = page[-1].name

    # -- runs ------------------------------------------------------------------------------------------------------

    @overload
    async def start_run(self, name: str, body: dict[str, Any], *, meta: dict[str, Any] | None = None) -> Run: ...

    @overload
    async def start_run(
        self, name: str, body: dict[str, Any], *, idempotency_key: str | None, meta: dict[str, Any] | None = None
    ) -> Run | str: ...

    async def start_run(
        self,
        name: str,
        body: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Run | str:
        """Start a run of agent `name`; return it, or with an `idempotency_key` used before, the id of that run.

        The key is claimed in the store (an append with that idempotency key to the topic `agents/{name}/keys`),
        so the same call retried, here or on another node, starts one run and learns its id. `meta` goes
        into the run's metadata beside ssehub's own keys (e.g. the ids a wire format shows every reader).
        """
        agent = self.agents.get(name)
        if agent is None:
            raise TopicNotFound(f"no agent {name!r}")
        if meta:
            _check_meta(meta, self.hub.config.max_meta_bytes)
        if agent.validate is not None:
            body = agent.validate(body)
        if self._stopping or self.hub.draining:
            raise TooManyRequests("the server is shutting down; retry on another node")
        if agent.max_concurrent is not None:
            active = sum(1 for r in self.runs.values() if r.agent is agent)
            if active >= agent.max_concurrent:
                raise TooManyRequests(f"agent {name!r} already has {active} runs in progress; retry later")
        run = Run(self, agent, secrets.token_urlsafe(12).replace("-", "x").replace("_", "y"), body)
        # Registered before the first await so that the concurrency limit holds under a burst.
        self.runs[run.id] = run
        try:
            if idempotency_key is not None:
                winner = await self._claim(name, idempotency_key, run.id, body)
                if winner != run.id:
                    del self.runs[run.id]
                    return winner
            run.identity = {**(meta or {}), "agent": name}
            await self.hub.update_meta(run.topic, self._running_meta(run))
        except BaseException:
            del self.runs[run.id]
            raise
        run.task = self._spawn(self._execute(run), f"ssehub-run-{run.id}")
        return run

    async def _claim(self, agent: str, key: str, run_id: str, body: dict[str, Any]) -> str:
        """The id of the run that owns `key`: `run_id` if this call claimed it first.

        What the key remembers is the call (agent and body), not the new run id each attempt brings: a retry
        of the same call finds the first run, the key reused for another body is an IdempotencyConflict (422).
        """
        topic = f"agents/{agent}/keys"
        call = NewEvent.from_json("call", {"agent": agent, "body": body})
        ids = await self.hub.publish_many(
            topic, [NewEvent("run", run_id)], idempotency_key=key, fingerprint=payload_fingerprint([call])
        )
        page = await self.hub.read(topic, ids[0] - 1, 1)
        if not page.events or page.events[0].id != ids[0]:
            raise InvalidInput(f"Idempotency-Key {key!r} was used for a run that retention has since dropped")
        return page.events[0].data

    async def wait_for(self, run_id: str) -> TopicInfo:
        """Wait until the run ends, wherever it runs, and return its final state."""
        run = self.runs.get(run_id)
        if run is not None:
            return await self.wait(run)
        info = await self.info(run_id)
        await self.hub.wait_closed(info.name)  # returns early when the server drains
        return await self.info(run_id)

    async def _execute(self, run: Run) -> None:
        try:
            await run._execute()
        finally:
            self.runs.pop(run.id, None)

    async def info(self, run_id: str) -> TopicInfo:
        """The run's topic, after checking that its owner is still alive."""
        if not run_id or "/" in run_id or len(run_id) > 100:
            raise InvalidInput(f"invalid run id {run_id[:40]!r}")
        try:
            info = await self.hub.info(RUN_PREFIX + run_id)
        except TopicNotFound:
            info = None
        if info is None or "agent" not in info.meta:
            run = self.runs.get(run_id)
            if run is None or run._terminal:
                raise TopicNotFound(f"no run {run_id!r}")
            # Running here, but the store has forgotten it (a Redis restarted without its data): say so again.
            await self.restore(run)
            info = await self.hub.info(RUN_PREFIX + run_id)
        return await self.check(info)

    async def check(self, info: TopicInfo) -> TopicInfo:
        """A `running` run whose owner is gone is marked failed (the error event and the close in one step)."""
        if info.closed or self._owner_alive(info.meta.get("owner"), info.name[len(RUN_PREFIX) :]):
            return info
        message = "the process running this run stopped before it finished"
        log.warning("run %s: %s; marking it failed", info.name, message)
        try:
            await self.hub.publish_many(info.name, [NewEvent.from_json("error", {"message": message})], close="failed")
            # The whole of what was known, again: the close may have landed in a new log (the store lost the old).
            ended = {**info.meta, "status": "failed", "error": message, "updated": time.time()}
            await self.hub.update_meta(info.name, ended)
        except TopicClosed:
            pass
        return await self.fresh(info)

    def _owner_alive(self, owner: Any, run_id: str) -> bool:
        if not isinstance(owner, dict):
            return False
        if owner.get("boot") == self.boot:
            return run_id in self.runs  # ours: alive while its task is
        if owner.get("host") == _HOST:
            pid = owner.get("pid")
            if pid == os.getpid():
                return False  # this pid, another boot: the process before us (e.g. pid 1 in a container)
            if isinstance(pid, int) and not _pid_alive(pid):
                return False
        return float(owner.get("lease", 0)) > time.time()

    async def cancel(self, run_id: str) -> TopicInfo:
        info = await self.info(run_id)
        if info.closed:
            return info
        run = self.runs.get(run_id)
        if run is not None:
            if run.cancel():
                await asyncio.wait([run.finished], timeout=5)
        else:
            # Owned by another process: close it here; the owner notices at its next write or lease renewal.
            with contextlib.suppress(TopicClosed):
                await self.hub.publish_many(
                    info.name,
                    [NewEvent.from_json("cancelled", {"reason": "cancelled by the client"})],
                    close="cancelled",
                )
                await self.hub.update_meta(info.name, {**info.meta, "status": "cancelled", "updated": time.time()})
        return await self.fresh(info)

    async def wait(self, run: Run) -> TopicInfo:
        await asyncio.shield(run.finished)
        try:
            return await self.hub.info(run.topic)
        except TopicNotFound:
            raise TopicNotFound(f"no run {run.id!r}") from None

    async def fresh(self, info: TopicInfo) -> TopicInfo:
        """The run's topic as the store has it now; `info` if it is gone meanwhile."""
        try:
            return await self.hub.info(info.name)
        except TopicNotFound:
            return info

    async def status_of(self, topic: str, default: str) -> str:
        try:
            return (await self.hub.info(topic)).status
        except TopicNotFound:
            return default


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
