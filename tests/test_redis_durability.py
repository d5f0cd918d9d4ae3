"""`durability_problems`: what a real Redis's configuration says about the durability an operator asks for."""

from __future__ import annotations

import logging
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from ssehub.exceptions import InvalidInput
from ssehub.stores import open_store
from ssehub.stores.redis import durability_problems
from support import RedisServer

pytestmark = pytest.mark.redis

NO_AOF = "appendonly is no: a restart of Redis loses every event since its last snapshot; set appendonly yes"
EVERYSEC = (
    "appendfsync is everysec: a power loss can lose the last second of acknowledged events; set appendfsync always"
)
EVICTION = (
    "maxmemory-policy is allkeys-lru with maxmemory 104857600: Redis may evict topic logs and idempotency keys; "
    "set maxmemory-policy noeviction"
)


async def test_each_level_against_each_configuration(private_redis: RedisServer) -> None:
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        # appendonly yes, appendfsync always: every level holds.
        for level in ("none", "process", "machine"):
            assert await durability_problems(client, level) == []
        await client.config_set("appendfsync", "everysec")
        assert await durability_problems(client, "process") == []
        assert await durability_problems(client, "machine") == [EVERYSEC]
        await client.config_set("appendonly", "no")
        assert await durability_problems(client, "none") == []
        assert await durability_problems(client, "process") == [NO_AOF]
        assert await durability_problems(client, "machine") == [NO_AOF]
        await client.config_set("maxmemory", "100mb")
        assert await durability_problems(client, "none") == []  # noeviction, the default, is fine
        await client.config_set("maxmemory-policy", "allkeys-lru")
        assert await durability_problems(client, "none") == [EVICTION]
        assert await durability_problems(client, "machine") == [EVICTION, NO_AOF]
    finally:
        await client.aclose()
    raw = aioredis.Redis.from_url(private_redis.url)  # replies as bytes
    try:
        assert await durability_problems(raw, "process") == [EVICTION, NO_AOF]
        with pytest.raises(InvalidInput, match="durability must be one of none, process, machine, not 'disk'"):
            await durability_problems(raw, "disk")
    finally:
        await raw.aclose()


async def test_a_redis_that_forbids_config_is_reported_not_guessed(private_redis: RedisServer) -> None:
    admin = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await admin.execute_command("ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", "-config")
    finally:
        await admin.aclose()
    client = aioredis.Redis.from_url(private_redis.url.replace("redis://", "redis://app:secret@"))
    try:
        [problem] = await durability_problems(client, "machine")
    finally:
        await client.aclose()
    assert problem.startswith("cannot read the Redis configuration (")
    assert "CONFIG" in problem.upper() and problem.endswith("durability 'machine' not verified")


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", "--port", "0", *args], capture_output=True, text=True, timeout=30
    )


async def test_serve_refuses_a_redis_that_cannot_keep_the_durability_asked_for(private_redis: RedisServer) -> None:
    admin = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await admin.config_set("appendfsync", "everysec")
    finally:
        await admin.aclose()
    done = _serve("--store", f"{private_redis.url}?durability=machine")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    where = urlsplit(private_redis.url).netloc
    assert done.stderr.strip().splitlines()[-1] == (
        f"ssehub serve: Redis at {where} cannot keep durability 'machine': {EVERYSEC}"
    )
    bad = _serve("--store", f"{private_redis.url}?durability=disk")
    assert bad.returncode in (1, 2)
    assert "?durability= must be one of none, process, machine, not 'disk'" in bad.stderr.strip().splitlines()[-1]


async def test_a_store_warns_on_start_about_what_breaks_every_level(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await admin.config_set("maxmemory", "100mb")
        await admin.config_set("maxmemory-policy", "allkeys-lru")
    finally:
        await admin.aclose()
    store = open_store(private_redis.url)  # no level stated: eviction is still worth a warning
    with caplog.at_level(logging.WARNING, logger="ssehub.redis"):
        await store.start()
        await store.aclose()
    assert [r.getMessage() for r in caplog.records if EVICTION in r.getMessage()]
