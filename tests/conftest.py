"""Shared fixtures: real servers on real sockets.

- `serve_app(app)`: runs an ASGI app on uvicorn inside the test's event loop, on a free port.
- `server`: a factory of real `ssehub serve` processes (`python -m ssehub serve ...`).
- `store_url`: every store the contract suite runs over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        hub = getattr(app.state, "hub", None)
        if hub is not None:
            hub.drain()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class ServerProcess:
    """A real `ssehub serve` process."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, cwd: Path) -> None:
        self.args, self.env, self.port, self.cwd = args, env, port, cwd
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"server-{port}.log"

    def start(self, timeout: float = 20) -> ServerProcess:
        cmd = [sys.executable, "-m", "ssehub", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ssehub serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"ssehub serve did not answer within {timeout}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`server(*args, env=..., port=...)` starts `ssehub serve` with those arguments; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, port: int | None = None) -> ServerProcess:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = ServerProcess(list(args), full_env, port or free_port(), tmp_path)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        with contextlib.suppress(Exception):
            proc.stop()


def store_urls() -> list[str]:
    return ["memory://", "sqlite", "redis"]


@pytest.fixture(params=store_urls())
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url: str = request.param
    if url == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    elif url == "redis":
        base: str = request.getfixturevalue("redis_url")
        with redis_prefix(base) as prefix:
            yield f"{base}?prefix={prefix}"
    else:
        yield url


# -- Redis --------------------------------------------------------------------------------------------
# The Redis tests run against a real server: SSEHUB_TEST_REDIS_URL, else one answering on
# 127.0.0.1:6379, else a redis-server started here. With CI=true a missing Redis fails the run.


class RedisServer:
    """A private `redis-server` on a free port, with AOF persistence so it can be killed and restarted."""

    def __init__(self, directory: Path, persistent: bool = True) -> None:
        self.dir, self.persistent = directory, persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", ""]
        if self.persistent:
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            cmd += ["--appendonly", "no"]
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if redis_answers(self.url):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start: {(self.dir / 'redis.log').read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def redis_answers(url: str) -> bool:
    try:
        import redis
    except ImportError:
        return False
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the test session."""
    url = os.environ.get("SSEHUB_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    if redis_answers(url):
        yield url
        return
    own: RedisServer | None = None
    if shutil.which("redis-server"):
        own = RedisServer(tmp_path_factory.mktemp("redis"), persistent=False).start()
        try:
            yield own.url
        finally:
            own.kill()
        return
    message = f"no Redis at {url} and no redis-server binary (apt-get install redis-server)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A key prefix of its own on a shared Redis; its keys are removed afterwards (never FLUSHDB)."""
    import redis

    prefix = f"ssehub-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with persistence, that it may kill and restart."""
    if not shutil.which("redis-server"):
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()


async def eventually(predicate: Callable[[], object], timeout: float = 10) -> None:
    """Wait until `predicate()` is true, polling; fails after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)
