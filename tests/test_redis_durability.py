"""`durability_problems`: what a real Redis's configuration says about the durability an operator asks for."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from ssehub.exceptions import InvalidInput
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
