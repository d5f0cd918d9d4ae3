"""The SQLite store's own promises: one process per file, old databases open, paths without traps."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ssehub import NewEvent, StoreUnavailable, open_store
from ssehub.stores import SQLiteStore
from support import ROOT, ServerProcess

Start = Callable[..., ServerProcess]


def serve(tmp_path: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`ssehub serve` that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_second_server_on_the_same_file_refuses_with_one_line(server: Start, tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    first = server("--store", f"sqlite:///{db}")
    assert first.proc is not None
    refused = serve(tmp_path, "--store", f"sqlite:///{db}", "--port", "0")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"ssehub serve: SQLite database {db} is already served by another process (pid {first.proc.pid}); "
        "a SQLite file belongs to one process: stop that one, or use redis:// to share topics between processes"
    ]
    # The same file through another spelling of its path is the same file.
    (tmp_path / "link.db").symlink_to(db)
    assert serve(tmp_path, "--store", "sqlite:///link.db", "--port", "0").returncode == 1
    assert serve(tmp_path, "--store", "sqlite:///./hub.db", "--port", "0").returncode == 1

    # kill -9 leaves no stale lock: the kernel drops it with the process.
    first.kill()
    second = server("--store", f"sqlite:///{db}")
    r = httpx.post(f"{second.url}/topics/t/events", json={"data": 1}, timeout=10)
    assert r.json() == {"ids": [1]}


async def test_the_lock_is_held_from_start_to_aclose(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    store = SQLiteStore(path)
    await store.start()
    other = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match="already served by another process"):
        await other.start()
    await store.aclose()
    await other.start()  # free again
    assert await other.append("t", [NewEvent("n", "1")]) == [1]
    await other.aclose()
    assert (tmp_path / "x.db.lock").read_text().strip() == str(os.getpid())


async def test_a_database_from_before_epochs_and_fingerprints_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE topics (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL DEFAULT 0,
            first_id INTEGER NOT NULL DEFAULT 1, status TEXT NOT NULL DEFAULT 'open', created REAL NOT NULL,
            updated REAL NOT NULL, closed_at REAL, meta TEXT NOT NULL DEFAULT '{}') WITHOUT ROWID;
        CREATE TABLE events (topic TEXT NOT NULL, id INTEGER NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL,
            time REAL NOT NULL, PRIMARY KEY (topic, id)) WITHOUT ROWID;
        CREATE TABLE idempotency_keys (topic TEXT NOT NULL, key TEXT NOT NULL, ids TEXT NOT NULL,
            time REAL NOT NULL, PRIMARY KEY (topic, key)) WITHOUT ROWID;
        INSERT INTO topics (name, last_id, created, updated) VALUES ('old', 1, 1, 1), ('older', 0, 1, 1);
        INSERT INTO events VALUES ('old', 1, 'n', '"x"', 1);
        INSERT INTO idempotency_keys VALUES ('old', 'k', '[1]', 1e12);
        """
    )
    conn.close()
    store = open_store(f"sqlite:///{path}")
    await store.start()
    try:
        old, older = await store.info("old"), await store.info("older")
        assert old is not None and older is not None
        assert len(old.epoch) == 16 and old.epoch != older.epoch
        assert await store.append("old", [NewEvent("n", "y")], idempotency_key="k", fingerprint="f") == [1]
        assert await store.append("old", [NewEvent("n", "y")]) == [2]
        page = await store.read("old", 0, 10)
        assert page is not None and page.epoch == old.epoch and [e.data for e in page.events] == ['"x"', "y"]
    finally:
        await store.aclose()


def test_store_urls_three_and_four_slashes_and_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel/hub.db")
    assert isinstance(relative, SQLiteStore) and relative.path == str(tmp_path / "rel" / "hub.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")  # three slashes and an absolute path: four
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/abs.db"
    one = open_store(f"sqlite:{tmp_path}/one.db")  # a URI without a host: the path as written
    assert isinstance(one, SQLiteStore) and one.path == f"{tmp_path}/one.db"
    assert repr(relative) == f"SQLiteStore({str(tmp_path / 'rel' / 'hub.db')!r})"


def test_the_start_line_names_the_absolute_path_and_a_likely_slip_is_warned(server: Start, tmp_path: Path) -> None:
    # `sqlite:///tmp/x.db` is tmp/x.db under the working directory; /tmp exists and ./tmp does not: a slip.
    node = server("--store", "sqlite:///tmp/ssehub-slip-test.db")
    deadline = time.monotonic() + 5
    while "ssehub serving" not in node.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    node.proc.wait(10)
    out = node.output()
    where = tmp_path / "tmp" / "ssehub-slip-test.db"
    assert f"ssehub serving SQLiteStore('{where}')" in out
    warning = [line for line in out.splitlines() if "WARNING" in line]
    assert len(warning) == 1, out
    assert (
        f"SQLite path tmp/ssehub-slip-test.db is relative to the working directory ({tmp_path}); "
        "for /tmp/ssehub-slip-test.db write sqlite:////tmp/ssehub-slip-test.db"
    ) in warning[0]
    # No warning where the relative path is plainly meant: its first directory is here, or not at /.
    quiet = server("--store", "sqlite:///tmp/again.db")  # ./tmp exists now
    quiet.stop()
    assert "WARNING" not in quiet.output()
