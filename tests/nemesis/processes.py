"""The real processes of a run: `ssehub serve` hubs, a private redis-server, the node subscribers.

Like tests/conftest.py's `ServerProcess`, but driven from asyncio: the workload keeps running
while a hub restarts, so nothing here may block the event loop. Every process can be killed,
terminated, paused and resumed by its pid; a hub's resources are read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from support import ROOT, free_port

from .history import Delivery, Incident, Reader, Sample, payload_of

__all__ = ["HubProcess", "NodeReaders", "RedisServer", "scan_log"]

NODE_DIR = ROOT / "tests" / "node" / "nemesis"


class _Process:
    """Signals by pid, for a process started with asyncio."""

    name = "process"

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    async def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        await self.proc.wait()
        self.paused = False

    async def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait for the exit (kill -9 after `timeout`); returns the exit code."""
        if self.proc is None:
            return None
        if self.paused:
            self.resume()
        self.signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            return self.proc.returncode


class HubProcess(_Process):
    """One `ssehub serve` on a fixed port, restartable; its output goes to one log file."""

    def __init__(
        self,
        name: str,
        port: int,
        store: str,
        args: list[str],
        env: dict[str, str],
        workdir: Path,
        store_port: int | None = None,
    ) -> None:
        super().__init__()
        self.name, self.port, self.store, self.args, self.env, self.workdir = name, port, store, args, env, workdir
        self.store_port = store_port
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / f"{name}.log"
        self.incarnation = -1

    async def start(self, timeout: float = 30.0) -> None:
        self.incarnation += 1
        cmd = [sys.executable, "-m", "ssehub", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--store", self.store, *self.args]
        with open(self.log, "ab") as log:
            log.write(f"--- nemesis: {self.name} incarnation {self.incarnation}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, env=self.env, cwd=self.workdir, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {timeout}s; see {self.log}")

    def sample(self, t: float, phase: str) -> Sample | None:
        """Its RSS and file descriptors, and of those, its sockets to the store and from clients."""
        pid = self.pid
        if pid is None:
            return None
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            sockets = _tcp_sockets(pid)
        except OSError:
            return None  # it exited meanwhile
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        mine = [
            sockets[inode] for link in links if (inode := link[8:-1] if link.startswith("socket:[") else "") in sockets
        ]
        to_store = sum(1 for _, remote, _ in mine if remote == self.store_port)
        from_clients = sum(1 for local, _, state in mine if local == self.port and state != _LISTEN)
        rss = int(found.group(1)) if found else 0
        return Sample(self.name, self.incarnation, pid, t, rss, len(links), phase, to_store, from_clients)

    def incidents(self, wall_start: float) -> list[Incident]:
        return scan_log(self.name, self.log.read_text(errors="replace") if self.log.exists() else "", wall_start)


_LISTEN = "0A"


def _tcp_sockets(pid: int) -> dict[str, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of the TCP sockets in the process's network namespace."""
    table: dict[str, tuple[int, int, str]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = row.split()
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                table[fields[9]] = (local, remote, fields[3])
    return table


def scan_log(process: str, text: str, wall_start: float = 0.0) -> list[Incident]:
    """The ERROR lines of a log, each with the exception its traceback ended in and its time on the run's clock."""
    found: list[Incident] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not re.search(r"(^|\s)ERROR(:|\s)", line):
            continue
        exception = ""
        if i + 1 < len(lines) and lines[i + 1].startswith("Traceback"):
            for later in lines[i + 2 :]:
                if later and not later.startswith((" ", "\t", "Traceback")):
                    exception = later.strip()
                    break
        t: float | None = None
        stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", line)  # ssehub's logging format
        if stamp:
            t = round(datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - wall_start, 3)
        found.append(Incident(process, line.strip()[:300], exception[:300], t))
    return found


class RedisServer(_Process):
    """A redis-server of the run's own, in its own directory, restartable on the same port."""

    name = "redis"

    def __init__(self, directory: Path, *, fsync: str | None) -> None:
        """`fsync`: "always" or "everysec" for an append-only file, None for no persistence at all."""
        super().__init__()
        self.dir, self.fsync = directory, fsync
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> float:
        """Start it and wait until it answers PING; returns when it did (time.monotonic())."""
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", ""]
        if self.fsync is not None:
            cmd += ["--appendonly", "yes", "--appendfsync", self.fsync]
        else:
            cmd += ["--appendonly", "no"]
        cmd += ["--logfile", str(self.dir / "redis.log")]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.ping():
                return time.monotonic()
            await asyncio.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer; see {self.dir / 'redis.log'}")

    def wipe(self) -> None:
        """Forget everything it stored: what a Redis without persistence has after a restart."""
        for entry in self.dir.iterdir():
            if entry.name != "redis.log":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)

    async def ping(self) -> bool:
        client = self.client()
        try:
            return bool(await client.ping())
        except RedisError:
            return False
        finally:
            await client.aclose()


class NodeReaders(_Process):
    """One node process holding any number of npm `eventsource` subscribers (tests/node/nemesis/subscribe.mjs).

    Subscribers are opened by a JSON line on its standard input; it writes what each one sees
    as JSON lines to `out` and exits once its input is closed and every subscriber has ended.
    """

    name = "node"

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out
        self.meta: dict[str, tuple[str, int, float]] = {}  # name -> topic, after, start
        self._stderr = out.with_suffix(".stderr")

    @staticmethod
    def available() -> str | None:
        """Why the node subscribers cannot run here, or None."""
        if shutil.which("node") is None:
            return "node is not installed"
        if not (NODE_DIR / "node_modules" / "eventsource").is_dir():
            return "tests/node/nemesis has no node_modules: run scripts/node-deps"
        return None

    async def start(self) -> None:
        with open(self._stderr, "ab") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                "node",
                str(NODE_DIR / "subscribe.mjs"),
                str(self.out),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )

    def open(self, name: str, url: str, topic: str, after: int, events: list[str], start: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.meta[name] = (topic, after, start)
        self.proc.stdin.write(json.dumps({"name": name, "url": url, "events": events}).encode() + b"\n")

    async def finish(self, timeout: float) -> None:
        """Close its input and give its subscribers `timeout` seconds to end."""
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()

    def readers(self, wall_start: float) -> list[Reader]:
        """What each subscriber saw; times moved onto the run's clock (`wall_start` is its time.time() at 0)."""
        seen: dict[str, dict[str, Any]] = {
            n: {"deliveries": [], "connections": [], "finished": False} for n in self.meta
        }
        text = self.out.read_text() if self.out.exists() else ""
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the last line of a killed process
            mine = seen.get(record.get("name"))
            if mine is None:
                continue
            t = float(record["t"]) - wall_start
            kind = record["kind"]
            if kind == "event":
                mine["deliveries"].append(Delivery(int(record["id"]), record["event"], payload_of(record["data"]), t))
            elif kind == "open":
                mine["connections"].append([t, None])
            elif kind == "error" and mine["connections"] and mine["connections"][-1][1] is None:
                mine["connections"][-1][1] = t
            elif kind == "end":
                mine["finished"] = True
        return [
            Reader(
                name,
                "node",
                topic,
                after,
                start,
                tuple(seen[name]["deliveries"]),
                seen[name]["finished"],
                tuple((a, b) for a, b in seen[name]["connections"]),
            )
            for name, (topic, after, start) in self.meta.items()
        ]
