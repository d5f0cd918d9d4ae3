"""What the tests share: real servers on real sockets, a real Redis, and a bare SSE reader.

- `serve_app(app)`: runs an ASGI app on uvicorn inside the test's event loop, on a free port.
- `ServerProcess`: a real `ssehub serve` process (`python -m ssehub serve ...`); the `server` fixture starts them.
- `RedisServer`: a private `redis-server`, with persistence, that a test may kill and restart.
- `read_sse` / `sse_events`: read a response as SSE with httpx and the project's Decoder, nothing else.
- `eventually`: poll a condition, as a client would.

Fixtures live in conftest.py; tests import these helpers as `from support import ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import uvicorn

from ssehub.sse import Decoder, ServerSentEvent

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
    """A real `ssehub serve` process; or with `command`, any server of a hub (`{port}` in it is the port),
    whose hub answers under `url` + `prefix`."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        port: int,
        cwd: Path,
        command: list[str] | None = None,
        prefix: str = "",
    ) -> None:
        self.args, self.env, self.port, self.cwd = args, env, port, cwd
        self.command = command
        self.url = f"http://127.0.0.1:{port}{prefix}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"server-{port}.log"

    def start(self, timeout: float = 20) -> ServerProcess:
        if self.command is not None:
            cmd = [part.replace("{port}", str(self.port)) for part in self.command]
        else:
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


def missing(message: str) -> NoReturn:
    """Something a test needs is not installed: a skip on a developer's machine, a failure in CI."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


# -- Redis --------------------------------------------------------------------------------------------
# The Redis tests run against a real server: SSEHUB_TEST_REDIS_URL, else one answering on
# 127.0.0.1:6379, else a redis-server started here. With CI=true a missing Redis fails the run.


class RedisServer:
    """A private `redis-server` on a free port, with AOF persistence so it can be killed and restarted."""

    def __init__(self, directory: Path, persistent: bool = True) -> None:
        self.dir, self.persistent = directory, persistent
        self.cluster = False
        self.extra: list[str] = []  # more redis-server options (TLS, a password)
        self.ready_url: str | None = None  # where to PING it when `url` needs more than a plain connection
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
        if self.cluster:
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / "nodes.conf")]
            # The bus port defaults to port + 10000, past 65535 for most free ports: choose one.
            cmd += ["--cluster-port", str(free_port())]
        cmd += self.extra
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if redis_answers(self.ready_url or self.url):
                return self
            time.sleep(0.02)
        self.kill()
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


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A key prefix of its own on a shared Redis (or cluster); its keys are removed afterwards (never FLUSHDB)."""
    import redis
    from redis.cluster import RedisCluster as ClusterClient

    prefix = f"ssehub-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        if "cluster=yes" in url:
            with ClusterClient.from_url(url.split("?")[0]) as cluster:
                for key in list(cluster.scan_iter(match=f"{prefix}*", count=1000)):
                    cluster.delete(key)
        else:
            with redis.Redis.from_url(url) as client:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    client.delete(*keys)


class RedisCluster:
    """A real Redis Cluster of `masters` redis-server processes on loopback ports, in `directory`."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.servers = [RedisServer(directory / f"node{i}", persistent=False) for i in range(masters)]
        self.url = f"redis://127.0.0.1:{self.servers[0].port}/0?cluster=yes"

    def start(self) -> RedisCluster:
        for node in self.servers:
            node.cluster = True
            node.start()
        nodes = [f"127.0.0.1:{node.port}" for node in self.servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        import redis

        deadline = time.monotonic() + 30
        for node in self.servers:
            with redis.Redis(port=node.port) as client:
                while client.cluster("INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the Redis Cluster did not become ready")
                    time.sleep(0.05)
        return self

    def kill(self) -> None:
        for node in self.servers:
            node.kill()


async def eventually(predicate: Callable[[], object], timeout: float = 10) -> None:
    """Wait until `predicate()` is true, polling; fails after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


# -- reading SSE ---------------------------------------------------------------------------------------


@dataclass
class Read:
    status: int = 0
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    events: list[ServerSentEvent] = field(default_factory=list)
    raw: bytes = b""
    ended: bool = False  # the server ended the response (rather than us stopping)
    retry: int | None = None


async def read_sse(
    client: httpx.AsyncClient,
    url: str,
    *,
    count: int | None = None,
    headers: Mapping[str, str] | None = None,
    until_raw: bytes | None = None,
    into: Read | None = None,
) -> Read:
    """GET `url` as SSE; stop after `count` events, when `until_raw` appears, or when the server ends.

    Pass `into` to watch the read while it runs (from another task): its events and raw bytes grow as they arrive.
    """
    decoder = Decoder()
    async with client.stream("GET", url, headers={"accept": "text/event-stream", **(headers or {})}) as resp:
        read = into or Read(resp.status_code, resp.headers)
        read.status, read.headers = resp.status_code, resp.headers
        if resp.status_code != 200:
            await resp.aread()
            read.raw = resp.content
            return read
        async for chunk in resp.aiter_raw():
            read.raw += chunk
            read.events += decoder.feed(chunk)
            read.retry = decoder.retry
            if count is not None and len(read.events) >= count:
                return read
            if until_raw is not None and until_raw in read.raw:
                return read
        read.ended = True
    return read


async def sse_events(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """The events of a streaming response, as they arrive."""
    decoder = Decoder()
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            yield event


async def read_all(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> list[ServerSentEvent]:
    """Every event of one response, which must be a 200 (e.g. `POST /agents/x` as SSE) and end by itself."""
    async with client.stream(method, url, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        return [e async for e in sse_events(response)]
