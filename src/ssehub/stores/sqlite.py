"""`sqlite:///path.db`: the embedded durable store, the default of `ssehub serve`.

Writes go to one writer thread that takes every request queued while it was
busy and commits them in one transaction (group commit), so a burst of
publishes costs one fsync, and the event loop never waits on the disk. Each
request runs inside its own savepoint, so one bad request (a publish to a
closed topic) fails alone. Reads run on a small pool of threads with their own
connections; WAL mode lets them read while the writer writes.

Change notifications are handed to the event loop in commit order with
`call_soon_threadsafe`, which keeps them in id order for the hub's tail.

One process per file: the store holds an exclusive `flock` on `<path>.lock`
from `start` to `aclose`, so a second process (a second `ssehub serve`) is
refused instead of silently missing every event the first one publishes (the
change notifications live in one process). The kernel drops the lock with the
process however it ends, so a killed server leaves no stale lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..events import Event, NewEvent, TopicInfo
from ..exceptions import IdempotencyConflict, SSEHubError, StoreUnavailable, TopicClosed, TopicNotFound
from .base import Appended, Change, Created, Page, Producer, Store, StreamState, check_producer, new_epoch, page_events

__all__ = ["SQLiteStore"]

log = logging.getLogger("ssehub.sqlite")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL DEFAULT 0,
    first_id INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'open',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    closed_at REAL,
    meta TEXT NOT NULL DEFAULT '{}',
    epoch TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    topic TEXT NOT NULL,
    id INTEGER NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (topic, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    ids TEXT NOT NULL,
    time REAL NOT NULL,
    fingerprint TEXT,
    PRIMARY KEY (topic, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_time ON idempotency_keys (time);
"""

# Columns added since the first schema: a database made by an older version gets them at start.
_ADDED_COLUMNS = [
    ("topics", "epoch", "TEXT NOT NULL DEFAULT ''"),
    ("idempotency_keys", "fingerprint", "TEXT"),
]

# Durable Streams state (see Store.create_stream): a row per stream, its producers, and the pins
# forks hold on the streams whose history they read.
_DURABLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS durable_streams (
    topic TEXT PRIMARY KEY,
    deadline REAL,
    deleted INTEGER NOT NULL DEFAULT 0,
    last_seq TEXT,
    source TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS durable_streams_deadline ON durable_streams (deadline) WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS durable_producers (
    topic TEXT NOT NULL,
    producer TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (topic, producer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS durable_pins (
    source TEXT NOT NULL,
    fork TEXT NOT NULL,
    PRIMARY KEY (source, fork)
) WITHOUT ROWID;
"""

_TOPIC_COLUMNS = "name, last_id, first_id, status, created, updated, closed_at, meta, epoch"

# (operation, its arguments, the future to resolve) or None to stop the writer.
_WriteOp = Callable[..., tuple[Any, list[Change]]]
_Request = tuple[_WriteOp, tuple[Any, ...], "asyncio.Future[Any]"]
# What became of a request: its future, and the value or the error to resolve it with.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
#: Topic states the writer keeps at most (`SQLiteStore._topics`); past that it forgets them all and reads again.
_KEPT_TOPICS = 50_000


@dataclass(slots=True)
class _TopicState:
    """What the writer knows of a topic's row between transactions: enough to append without reading it."""

    last_id: int
    first_id: int
    status: str
    epoch: str
    new: bool  # no row yet: the next write inserts it


@dataclass(slots=True)
class _Rows:
    """The rows of the plain appends staged since the last write: each table's in one statement."""

    events: list[tuple[str, int, str, str, float]] = field(default_factory=list)
    topics: dict[str, tuple[_TopicState, float]] = field(default_factory=dict)  # the state, as of `updated`
    trims: dict[str, int] = field(default_factory=dict)  # retention: events below this id go
    born: dict[str, float] = field(default_factory=dict)  # when the new topics were created

    def write(self, conn: sqlite3.Connection) -> None:
        if not self.topics:
            return
        born = self.born
        created = [(t, s.last_id, s.first_id, born[t], now, s.epoch) for t, (s, now) in self.topics.items() if s.new]
        if created:
            conn.executemany(
                "INSERT INTO topics (name, last_id, first_id, created, updated, epoch) VALUES (?, ?, ?, ?, ?, ?)",
                created,
            )
        conn.executemany("INSERT INTO events (topic, id, event, data, time) VALUES (?, ?, ?, ?, ?)", self.events)
        if self.trims:
            conn.executemany("DELETE FROM events WHERE topic = ? AND id < ?", list(self.trims.items()))
        updated = [(s.last_id, s.first_id, now, t) for t, (s, now) in self.topics.items() if not s.new]
        if updated:
            conn.executemany("UPDATE topics SET last_id = ?, first_id = ?, updated = ? WHERE name = ?", updated)
        for state, _ in self.topics.values():
            state.new = False
        self.events.clear()
        self.topics.clear()
        self.trims.clear()
        born.clear()


def _topic_info(row: tuple[Any, ...]) -> TopicInfo:
    name, last_id, first_id, status, created, updated, closed_at, meta, epoch = row
    return TopicInfo(name, last_id, first_id, status, created, updated, closed_at, json.loads(meta), epoch)


def _migrate(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    conn.executescript(_DURABLE_SCHEMA)
    for table, column, definition in _ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    # Topics from before epochs existed get one each (randomblob: a random id per row).
    conn.execute("UPDATE topics SET epoch = lower(hex(randomblob(8))) WHERE epoch = ''")


def _lock(path: str) -> int:
    """An open descriptor holding the exclusive lock of `path`'s lock file; raises StoreUnavailable if taken."""
    lock_path = f"{os.path.realpath(path)}.lock"  # the file itself, however its path is spelled
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreUnavailable(
            f"SQLite database {path} is already served by another process (pid {holder}); "
            "a SQLite file belongs to one process: stop that one, or use redis:// to share topics between processes"
        ) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


_warned: set[str] = set()


def _looks_absolute(path: str) -> str | None:
    """For a relative path whose first directory exists at / but not here, the absolute path meant."""
    first = Path(path).parts[0] if Path(path).parts else ""
    if os.path.isabs(path) or len(Path(path).parts) < 2 or Path(first).exists():
        return None
    return f"/{path}" if Path("/", first).is_dir() else None


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so group commit is explicit.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives a crash of the process (not of the machine) without an fsync each.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class SQLiteStore(Store):
    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        # Absolute from here on, so that the start line and every message name the file itself.
        self.path = path if path == ":memory:" else os.path.abspath(path)
        self._given = path
        self._lock_fd: int | None = None
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # The writer thread's: topic states as of its last commit (see `_commit_together`).
        self._topics: dict[str, _TopicState] = {}

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        meant = _looks_absolute(self._given)
        if meant is not None and self.path not in _warned:
            _warned.add(self.path)  # once per process: `ssehub serve` opens its store twice
            log.warning(
                "SQLite path %s is relative to the working directory (%s); for %s write sqlite:///%s",
                self._given,
                os.getcwd(),
                meant,
                meant,
            )
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd = _lock(self.path)
            conn = _connect(self.path)
            _migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            self._unlock()
            raise StoreUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from None
        self._writer = threading.Thread(target=self._write_loop, args=(conn,), name="ssehub-sqlite-writer", daemon=True)
        self._writer.start()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ssehub-sqlite-reader")

    async def aclose(self) -> None:
        if self._writer is not None:
            self._requests.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        for conn in self._read_conns:
            conn.close()
        self._read_conns.clear()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    # -- the writer thread -------------------------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._requests.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while True:
                    try:
                        more = self._requests.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        try:
            outcomes, changes = self._commit_together(conn, batch)
        except Exception:
            # Something failed in the rows written together (a SQLite error, or text it cannot encode): start
            # over, each request in its own savepoint, so the one to blame fails alone and the writer lives on.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._topics.clear()
            outcomes, changes = self._commit_each(conn, batch)
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver, outcomes, changes)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _commit_together(self, conn: sqlite3.Connection, batch: list[_Request]) -> tuple[list[_Outcome], list[Change]]:
        """The batch in one transaction, its plain appends (a token each, the common case) written together.

        A plain append needs no savepoint: what can refuse it (a closed topic) is known before it writes,
        from the topic's state, which this thread keeps (`_topics`: it is the only writer of the file).
        The rows of consecutive plain appends go in with one statement per table; any other request runs
        after them in its own savepoint, as in `_commit_each`, and makes the kept states be read again.
        A failure here is for `_commit` to handle.
        """
        outcomes: list[_Outcome] = []
        changes: list[Change] = []
        pending = _Rows()
        conn.execute("BEGIN IMMEDIATE")
        for op, args, fut in batch:
            if op == self._append_plain:
                topic, events, now = args
                try:
                    stored, epoch = self._stage(conn, pending, topic, events, now)
                except SSEHubError as exc:
                    outcomes.append((fut, None, exc))
                    continue
                outcomes.append((fut, [e.id for e in stored], None))
                changes.append(Change(topic, stored, None, epoch=epoch))
                continue
            pending.write(conn)
            self._topics.clear()
            outcomes.append(self._run_in_savepoint(conn, op, args, fut, changes))
        pending.write(conn)
        conn.execute("COMMIT")
        if len(self._topics) > _KEPT_TOPICS:
            self._topics.clear()
        return outcomes, changes

    def _stage(
        self, conn: sqlite3.Connection, pending: _Rows, topic: str, events: tuple[NewEvent, ...], now: float
    ) -> tuple[tuple[Event, ...], str]:
        """A plain append's rows, added to `pending`, and its stored events; TopicClosed before anything."""
        state = self._topics.get(topic)
        if state is None:
            row = conn.execute(
                "SELECT last_id, first_id, status, epoch FROM topics WHERE name = ?", (topic,)
            ).fetchone()
            if row is None:
                if self.max_topics:  # the topics of this transaction not yet written count too
                    count = conn.execute("SELECT COUNT(*) FROM topics").fetchone()[0]
                    self._check_room(count + len(pending.born), topic)
                state = _TopicState(0, 1, "open", new_epoch(), True)
            else:
                state = _TopicState(row[0], row[1], row[2], row[3], False)
            self._topics[topic] = state
        if state.status != "open":
            raise TopicClosed(f"topic {topic!r} is {state.status}")
        first = state.last_id + 1
        stored = tuple(Event(first + i, e.event, e.data, now) for i, e in enumerate(events))
        pending.events.extend((topic, e.id, e.event, e.data, now) for e in stored)
        state.last_id += len(stored)
        if state.last_id - state.first_id + 1 > self.max_events:
            state.first_id = state.last_id - self.max_events + 1
            pending.trims[topic] = state.first_id
        if state.new:
            pending.born.setdefault(topic, now)
        pending.topics[topic] = (state, now)
        return stored, state.epoch

    def _commit_each(self, conn: sqlite3.Connection, batch: list[_Request]) -> tuple[list[_Outcome], list[Change]]:
        """The batch in one transaction, each request in its own savepoint, so one that fails fails alone."""
        outcomes: list[_Outcome] = []
        changes: list[Change] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, args, fut in batch:
                outcomes.append(self._run_in_savepoint(conn, op, args, fut, changes))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = StoreUnavailable(f"SQLite commit failed: {exc}")
            outcomes = [(fut, None, error) for _, _, fut in batch]
            changes = []
        self._topics.clear()
        return outcomes, changes

    @staticmethod
    def _run_in_savepoint(
        conn: sqlite3.Connection, op: _WriteOp, args: tuple[Any, ...], fut: asyncio.Future[Any], changes: list[Change]
    ) -> _Outcome:
        conn.execute("SAVEPOINT request")
        try:
            value, changed = op(conn, *args)
        except Exception as exc:
            # Any error fails its own request and no other: one that escaped would end the writer thread,
            # and with it every later write (e.g. a str that UTF-8 cannot encode did).
            conn.execute("ROLLBACK TO request")
            conn.execute("RELEASE request")
            error = StoreUnavailable(f"SQLite error: {exc}") if isinstance(exc, sqlite3.Error) else exc
            return (fut, None, error)
        conn.execute("RELEASE request")
        changes.extend(changed)
        return (fut, value, None)

    def _deliver(self, outcomes: list[_Outcome], changes: list[Change]) -> None:
        # Listeners first, so the hub's tail holds the events before a publisher learns their ids.
        for change in changes:
            self._notify(change)
        for fut, value, error in outcomes:
            if fut.done():  # the caller went away; the write stands
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

    async def _write(self, op: _WriteOp, *args: Any) -> Any:
        if self._writer is None or self._loop is None:
            raise StoreUnavailable("the SQLite store is not started")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._requests.put((op, args, fut))
        # Not shielded: a cancelled caller cancels only `fut`; the write stands and its changes still reach
        # the listeners (`_deliver` reports them apart from the futures, and skips a future that is done).
        return await fut

    # -- reads ---------------------------------------------------------------------------------------

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            self._read_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise StoreUnavailable("the SQLite store is not started")

        def run() -> T:
            conn = self._reader_conn()
            conn.execute("BEGIN")  # one snapshot for every statement of the read
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from None

    # -- the contract ----------------------------------------------------------------------------------

    async def append(
        self,
        topic: str,
        events: Sequence[NewEvent],
        *,
        idempotency_key: str | None = None,
        close: str | None = None,
        fingerprint: str | None = None,
    ) -> list[int]:
        if idempotency_key is None and close is None:
            plain: list[int] = await self._write(self._append_plain, topic, tuple(events), self.now())
            return plain
        ids: list[int] = await self._write(
            self._append, topic, tuple(events), idempotency_key, close, fingerprint, self.now()
        )
        return ids

    def _append_plain(
        self, conn: sqlite3.Connection, topic: str, events: tuple[NewEvent, ...], now: float
    ) -> tuple[list[int], list[Change]]:
        # An append with no key and no close: `_commit_together` stages these itself; `_commit_each` runs this.
        return self._append(conn, topic, events, None, None, None, now)

    def _append(
        self,
        conn: sqlite3.Connection,
        topic: str,
        events: tuple[NewEvent, ...],
        key: str | None,
        close: str | None,
        fingerprint: str | None,
        now: float,
    ) -> tuple[list[int], list[Change]]:
        if key is not None:
            row = conn.execute(
                "SELECT ids, fingerprint FROM idempotency_keys WHERE topic = ? AND key = ?", (topic, key)
            ).fetchone()
            if row is not None:
                if row[1] and fingerprint and row[1] != fingerprint:
                    raise IdempotencyConflict(f"Idempotency-Key {key!r} was used with another payload")
                return json.loads(row[0]), []
        row = conn.execute("SELECT last_id, first_id, status, epoch FROM topics WHERE name = ?", (topic,)).fetchone()
        if row is None:
            self._check_room_in(conn, topic)
            epoch = new_epoch()
            conn.execute(
                "INSERT INTO topics (name, created, updated, epoch) VALUES (?, ?, ?, ?)", (topic, now, now, epoch)
            )
            last_id, first_id, status = 0, 1, "open"
        else:
            last_id, first_id, status, epoch = row
        if status != "open":
            raise TopicClosed(f"topic {topic!r} is {status}")
        stored = tuple(Event(last_id + 1 + i, e.event, e.data, now) for i, e in enumerate(events))
        conn.executemany(
            "INSERT INTO events (topic, id, event, data, time) VALUES (?, ?, ?, ?, ?)",
            [(topic, e.id, e.event, e.data, now) for e in stored],
        )
        last_id += len(stored)
        if last_id - first_id + 1 > self.max_events:
            first_id = last_id - self.max_events + 1
            conn.execute("DELETE FROM events WHERE topic = ? AND id < ?", (topic, first_id))
        conn.execute(
            "UPDATE topics SET last_id = ?, first_id = ?, updated = ?, status = ?, closed_at = ? WHERE name = ?",
            (last_id, first_id, now, close or "open", now if close else None, topic),
        )
        ids = [e.id for e in stored]
        if key is not None:
            conn.execute(
                "INSERT INTO idempotency_keys (topic, key, ids, time, fingerprint) VALUES (?, ?, ?, ?, ?)",
                (topic, key, json.dumps(ids), now, fingerprint),
            )
        return ids, [Change(topic, stored, close, epoch=epoch)]

    async def read(self, topic: str, after: int, limit: int, max_bytes: int | None = None) -> Page | None:
        def run(conn: sqlite3.Connection) -> Page | None:
            row = conn.execute(
                "SELECT first_id, last_id, status, epoch FROM topics WHERE name = ?", (topic,)
            ).fetchone()
            if row is None:
                return None
            rows = conn.execute(
                "SELECT id, event, data, time FROM events WHERE topic = ? AND id > ? ORDER BY id LIMIT ?",
                (topic, after, limit),
            )
            # Rows are stepped through one at a time, so a page bounded in bytes never holds more than it returns.
            events = page_events((Event(*r) for r in rows), max_bytes)
            rows.close()
            return Page(events, row[0], row[1], row[2], row[3])

        return await self._read(run)

    async def info(self, topic: str) -> TopicInfo | None:
        def run(conn: sqlite3.Connection) -> TopicInfo | None:
            row = conn.execute(f"SELECT {_TOPIC_COLUMNS} FROM topics WHERE name = ?", (topic,)).fetchone()
            return None if row is None else _topic_info(row)

        return await self._read(run)

    async def close_topic(self, topic: str, status: str) -> TopicInfo:
        info: TopicInfo = await self._write(self._close, topic, status, self.now())
        return info

    def _close(self, conn: sqlite3.Connection, topic: str, status: str, now: float) -> tuple[TopicInfo, list[Change]]:
        row = conn.execute(f"SELECT {_TOPIC_COLUMNS} FROM topics WHERE name = ?", (topic,)).fetchone()
        if row is None:
            raise TopicNotFound(f"no topic {topic!r}")
        info = _topic_info(row)
        if info.closed:
            return info, []
        conn.execute("UPDATE topics SET status = ?, closed_at = ? WHERE name = ?", (status, now, topic))
        closed = replace(info, status=status, closed_at=now)
        return closed, [Change(topic, (), status, epoch=info.epoch)]

    async def delete_topic(self, topic: str) -> bool:
        deleted: bool = await self._write(self._delete, topic)
        return deleted

    def _check_room_in(self, conn: sqlite3.Connection, topic: str) -> None:
        if self.max_topics:  # one count per topic created (the index's pages), none per publish
            self._check_room(conn.execute("SELECT COUNT(*) FROM topics").fetchone()[0], topic)

    def _delete(self, conn: sqlite3.Connection, topic: str) -> tuple[bool, list[Change]]:
        if conn.execute("DELETE FROM topics WHERE name = ?", (topic,)).rowcount == 0:
            return False, []
        conn.execute("DELETE FROM events WHERE topic = ?", (topic,))
        conn.execute("DELETE FROM idempotency_keys WHERE topic = ?", (topic,))
        return True, [Change(topic, deleted=True)]

    async def topics(self, prefix: str = "", after: str = "", limit: int = 100) -> list[TopicInfo]:
        def run(conn: sqlite3.Connection) -> list[TopicInfo]:
            rows = conn.execute(
                f"SELECT {_TOPIC_COLUMNS} FROM topics WHERE name > ? AND substr(name, 1, ?) = ? ORDER BY name LIMIT ?",
                (after, len(prefix), prefix, limit),
            ).fetchall()
            return [_topic_info(r) for r in rows]

        return await self._read(run)

    async def update_meta(self, topic: str, meta: dict[str, Any]) -> TopicInfo:
        info: TopicInfo = await self._write(self._update_meta, topic, meta, self.now())
        return info

    def _update_meta(
        self, conn: sqlite3.Connection, topic: str, meta: dict[str, Any], now: float
    ) -> tuple[TopicInfo, list[Change]]:
        if conn.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone() is None:
            self._check_room_in(conn, topic)
        conn.execute(
            "INSERT OR IGNORE INTO topics (name, created, updated, epoch) VALUES (?, ?, ?, ?)",
            (topic, now, now, new_epoch()),
        )
        row = conn.execute("SELECT meta FROM topics WHERE name = ?", (topic,)).fetchone()
        merged = {**json.loads(row[0]), **meta}
        conn.execute(
            "UPDATE topics SET meta = ? WHERE name = ?",
            (json.dumps({k: v for k, v in merged.items() if v is not None}), topic),
        )
        row = conn.execute(f"SELECT {_TOPIC_COLUMNS} FROM topics WHERE name = ?", (topic,)).fetchone()
        return _topic_info(row), []

    async def purge(self) -> int:
        names: list[str] = await self._write(self._purge, self.now())
        return len(names)

    def _purge(self, conn: sqlite3.Connection, now: float) -> tuple[list[str], list[Change]]:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM topics WHERE closed_at IS NOT NULL AND closed_at + ? <= ?"
                " AND name NOT IN (SELECT source FROM durable_pins)",
                (self.ttl, now),
            )
        ]
        if self.idle_ttl:
            # Open topics nobody published to for idle_ttl; Durable Streams expire by their own TTL.
            names += [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM topics WHERE closed_at IS NULL AND updated + ? <= ?"
                    " AND name NOT IN (SELECT topic FROM durable_streams)"
                    " AND name NOT IN (SELECT source FROM durable_pins)",
                    (self.idle_ttl, now),
                )
            ]
        for name in names:
            self._delete(conn, name)
        conn.execute("DELETE FROM idempotency_keys WHERE time + ? <= ?", (self.key_ttl, now))
        changes = [Change(name, deleted=True) for name in names]
        names += self._purge_durable(conn, now, changes)
        return names, changes

    # -- Durable Streams -------------------------------------------------------------------------------

    def _durable_state(self, conn: sqlite3.Connection, topic: str) -> StreamState | None:
        row = conn.execute(
            f"SELECT {_TOPIC_COLUMNS}, d.deadline, d.deleted,"
            " (SELECT COUNT(*) FROM durable_pins p WHERE p.source = t.name)"
            " FROM topics t LEFT JOIN durable_streams d ON d.topic = t.name WHERE t.name = ?",
            (topic,),
        ).fetchone()
        if row is None:
            return None
        return StreamState(_topic_info(row[:9]), row[9], bool(row[10]), row[11])

    def _drop(self, conn: sqlite3.Connection, topic: str, now: float, changes: list[Change]) -> None:
        """Delete for good, then unpin the source it forked from; a source left dead and unpinned goes too."""
        while True:
            row = conn.execute("SELECT source FROM durable_streams WHERE topic = ?", (topic,)).fetchone()
            _, changed = self._delete(conn, topic)
            changes.extend(changed)
            conn.execute("DELETE FROM durable_streams WHERE topic = ?", (topic,))
            conn.execute("DELETE FROM durable_producers WHERE topic = ?", (topic,))
            source = row[0] if row else None
            if source is None:
                return
            conn.execute("DELETE FROM durable_pins WHERE source = ? AND fork = ?", (source, topic))
            state = self._durable_state(conn, source)
            if state is None or state.forks or not state.dead(now):
                return
            topic = source

    def _live(self, conn: sqlite3.Connection, topic: str, now: float, changes: list[Change]) -> StreamState | None:
        """The topic's state unless it has expired: then it is collected, or soft-deleted while pinned."""
        state = self._durable_state(conn, topic)
        if state is None or state.deleted or not state.dead(now):
            return state
        if state.forks:
            conn.execute("UPDATE durable_streams SET deleted = 1 WHERE topic = ?", (topic,))
            return StreamState(state.info, state.deadline, True, state.forks)
        self._drop(conn, topic, now, changes)
        return None

    def _purge_durable(self, conn: sqlite3.Connection, now: float, changes: list[Change]) -> list[str]:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT topic FROM durable_streams WHERE (deadline <= ? OR deleted)"
                " AND topic NOT IN (SELECT source FROM durable_pins)",
                (now,),
            )
        ]
        for name in names:
            self._drop(conn, name, now, changes)
        return names

    async def stream_state(self, topic: str) -> StreamState | None:
        state: StreamState | None = await self._read(lambda conn: self._durable_state(conn, topic))
        return state

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
        args = (topic, meta, tuple(events), closed, deadline, base, forked_from, self.now())
        created: Created = await self._write(self._create_stream, *args)
        return created

    def _create_stream(
        self,
        conn: sqlite3.Connection,
        topic: str,
        meta: dict[str, Any],
        events: tuple[NewEvent, ...],
        closed: bool,
        deadline: float | None,
        base: int,
        forked_from: str | None,
        now: float,
    ) -> tuple[Created, list[Change]]:
        changes: list[Change] = []
        released = None
        old = self._durable_state(conn, topic)
        if old is not None:
            if not old.dead(now):
                return Created("exists", old), changes
            if old.forks or old.deleted:
                conn.execute("UPDATE durable_streams SET deleted = 1 WHERE topic = ?", (topic,))
                return Created("gone", StreamState(old.info, old.deadline, True, old.forks)), changes
            row = conn.execute("SELECT source FROM durable_streams WHERE topic = ?", (topic,)).fetchone()
            released = row[0] if row else None
            _, changed = self._delete(conn, topic)
            changes.extend(changed)
            conn.execute("DELETE FROM durable_streams WHERE topic = ?", (topic,))
            conn.execute("DELETE FROM durable_producers WHERE topic = ?", (topic,))
        else:
            self._check_room_in(conn, topic)
        status = "completed" if closed else "open"
        last_id = base + len(events)
        epoch = new_epoch()
        conn.execute(
            "INSERT INTO topics (name, last_id, first_id, status, created, updated, closed_at, meta, epoch)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (topic, last_id, base + 1, status, now, now, now if closed else None, json.dumps(meta), epoch),
        )
        stored = tuple(Event(base + 1 + i, e.event, e.data, now) for i, e in enumerate(events))
        conn.executemany(
            "INSERT INTO events (topic, id, event, data, time) VALUES (?, ?, ?, ?, ?)",
            [(topic, e.id, e.event, e.data, now) for e in stored],
        )
        conn.execute(
            "INSERT INTO durable_streams (topic, deadline, source) VALUES (?, ?, ?)", (topic, deadline, forked_from)
        )
        if stored or closed:
            changes.append(Change(topic, stored, status if closed else None, epoch=epoch))
        state = self._durable_state(conn, topic)
        assert state is not None
        return Created("created", state, tuple(e.id for e in stored), released), changes

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
        args = (topic, tuple(events), seq, producer, close, renew, self.now())
        appended: Appended = await self._write(self._append_stream, *args)
        return appended

    def _append_stream(
        self,
        conn: sqlite3.Connection,
        topic: str,
        events: tuple[NewEvent, ...],
        seq: str | None,
        producer: Producer | None,
        close: bool,
        renew: float | None,
        now: float,
    ) -> tuple[Appended, list[Change]]:
        changes: list[Change] = []
        state = self._live(conn, topic, now, changes)
        if state is None:
            return Appended("not_found"), changes
        info = state.info
        if state.deleted:
            return Appended("gone", info.last_id, info.closed), changes
        epoch = pseq = None
        if producer is not None:
            row = conn.execute(
                "SELECT epoch, seq FROM durable_producers WHERE topic = ? AND producer = ?", (topic, producer.id)
            ).fetchone()
            verdict, epoch, pseq = check_producer(None if row is None else (row[0], row[1]), producer)
            if verdict == "duplicate" or (info.closed and verdict != "accept"):
                outcome: Literal["duplicate", "closed"] = "duplicate" if verdict == "duplicate" else "closed"
                return Appended(outcome, info.last_id, info.closed, epoch=epoch, seq=pseq), changes
            if verdict != "accept":
                return Appended(verdict, info.last_id, info.closed, epoch=epoch, seq=pseq), changes
        if info.closed:
            return Appended("closed", info.last_id, True), changes
        if seq is not None:
            row = conn.execute("SELECT last_seq FROM durable_streams WHERE topic = ?", (topic,)).fetchone()
            if row is not None and row[0] is not None and seq.encode() <= row[0].encode():
                return Appended("seq_conflict", info.last_id, False), changes
        status = "completed" if close else None
        ids: list[int] = []
        last_id = info.last_id
        if events:
            ids, changed = self._append(conn, topic, events, None, status, None, now)
            changes.extend(changed)
            last_id = ids[-1]
        elif close:
            _, changed = self._close(conn, topic, "completed", now)
            changes.extend(changed)
        conn.execute(
            "INSERT INTO durable_streams (topic, deadline, last_seq) VALUES (?, ?, ?) ON CONFLICT (topic) DO UPDATE"
            " SET deadline = coalesce(excluded.deadline, deadline), last_seq = coalesce(excluded.last_seq, last_seq)",
            (topic, renew, seq),
        )
        if producer is not None:
            conn.execute(
                "INSERT OR REPLACE INTO durable_producers (topic, producer, epoch, seq) VALUES (?, ?, ?, ?)",
                (topic, producer.id, epoch, pseq),
            )
        return Appended("ok", last_id, close, tuple(ids), epoch, pseq), changes

    async def touch_stream(self, topic: str, deadline: float) -> None:
        await self._write(self._touch_stream, topic, deadline, self.now())

    def _touch_stream(
        self, conn: sqlite3.Connection, topic: str, deadline: float, now: float
    ) -> tuple[None, list[Change]]:
        conn.execute(
            "UPDATE durable_streams SET deadline = ? WHERE topic = ? AND NOT deleted AND deadline > ?",
            (deadline, topic, now),
        )
        return None, []

    async def delete_stream(self, topic: str) -> Literal["deleted", "soft", "not_found", "gone"]:
        outcome: Literal["deleted", "soft", "not_found", "gone"] = await self._write(
            self._delete_stream, topic, self.now()
        )
        return outcome

    def _delete_stream(
        self, conn: sqlite3.Connection, topic: str, now: float
    ) -> tuple[Literal["deleted", "soft", "not_found", "gone"], list[Change]]:
        changes: list[Change] = []
        before = self._durable_state(conn, topic)
        if before is None:
            return "not_found", changes
        if before.deleted:
            return "gone", changes
        if self._live(conn, topic, now, changes) is None or before.dead(now):
            return "not_found", changes  # it had expired
        if before.forks:
            conn.execute(
                "INSERT INTO durable_streams (topic, deleted) VALUES (?, 1)"
                " ON CONFLICT (topic) DO UPDATE SET deleted = 1",
                (topic,),
            )
            return "soft", [Change(topic, deleted=True)]
        self._drop(conn, topic, now, changes)
        return "deleted", changes

    async def pin_source(self, source: str, fork: str) -> StreamState | None:
        state: StreamState | None = await self._write(self._pin_source, source, fork, self.now())
        return state

    def _pin_source(
        self, conn: sqlite3.Connection, source: str, fork: str, now: float
    ) -> tuple[StreamState | None, list[Change]]:
        changes: list[Change] = []
        state = self._live(conn, source, now, changes)
        if state is None or state.deleted:
            return state, changes
        conn.execute("INSERT OR IGNORE INTO durable_pins (source, fork) VALUES (?, ?)", (source, fork))
        return self._durable_state(conn, source), changes

    async def unpin_source(self, source: str, fork: str) -> None:
        await self._write(self._unpin_source, source, fork, self.now())

    def _unpin_source(self, conn: sqlite3.Connection, source: str, fork: str, now: float) -> tuple[None, list[Change]]:
        changes: list[Change] = []
        conn.execute("DELETE FROM durable_pins WHERE source = ? AND fork = ?", (source, fork))
        state = self._durable_state(conn, source)
        if state is not None and not state.forks and state.dead(now):
            self._drop(conn, source, now, changes)
        return None, changes
