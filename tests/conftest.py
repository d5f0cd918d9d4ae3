"""Fixtures: real `ssehub serve` processes, every store, a real Redis. The helpers they use are in support.py."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import RedisCluster, RedisServer, ServerProcess, free_port, missing, redis_answers, redis_prefix


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`server(*args, env=..., port=...)` starts `ssehub serve` with those arguments (or `command=[...]`, another
    server of a hub); all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        command: list[str] | None = None,
        prefix: str = "",
    ) -> ServerProcess:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = ServerProcess(list(args), full_env, port or free_port(), tmp_path, command, prefix)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        with contextlib.suppress(Exception):
            proc.stop()


def store_urls() -> list[str]:
    return ["memory://", "sqlite", "redis", "redis-cluster"]


@pytest.fixture(params=store_urls())
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url: str = request.param
    if url == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    elif url in ("redis", "redis-cluster"):
        base: str = request.getfixturevalue("redis_url" if url == "redis" else "redis_cluster_url")
        with redis_prefix(base) as prefix:
            yield f"{base}{'&' if '?' in base else '?'}prefix={prefix}"
    else:
        yield url


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
    missing(f"no Redis at {url} and no redis-server binary (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster of this test session's own (redis-server in cluster mode)."""
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        missing("redis-server and redis-cli are not installed (apt-get install redis-server)")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster.url
    finally:
        cluster.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with persistence, that it may kill and restart."""
    if not shutil.which("redis-server"):
        missing("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()
