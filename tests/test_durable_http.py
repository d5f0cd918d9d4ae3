"""ssehub's own rules on the Durable Streams surface, through real sockets (the suite covers the protocol):
the hub's keys and tokens guard every operation, the prefix is configurable or off, ssehub topics are JSON
streams, and every refusal is a JSON error with the protocol's headers."""

from __future__ import annotations

import httpx
import pytest

from ssehub import Hub, HubConfig
from ssehub.access import Policy
from ssehub.asgi import create_app
from ssehub.asgi.auth import Access
from ssehub.durable import offsets
from support import serve_app


async def test_the_hubs_keys_and_tokens_guard_every_stream_operation() -> None:
    key = "k" * 24
    policy = Policy({"ops": key})
    hub = Hub("memory://")
    async with serve_app(create_app(hub, access=Access(policy))) as url, httpx.AsyncClient(base_url=url) as client:
        refused = await client.put("/v1/stream/a/t", headers={"content-type": "text/plain"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["x-content-type-options"] == "nosniff"
        assert (await client.get("/v1/stream/a/t")).status_code == 401  # reads are checked too
        ops = {"authorization": f"Bearer {key}", "content-type": "text/plain"}
        assert (await client.put("/v1/stream/a/t", headers=ops, content=b"hi")).status_code == 201
        assert (await client.put("/v1/stream/b/t", headers=ops, content=b"secret")).status_code == 201
        # A browser's token names the stream paths it may read and write, as topic patterns.
        reader = {"authorization": f"Bearer {policy.mint(subscribe=['a/*'])}", "content-type": "text/plain"}
        assert (await client.get("/v1/stream/a/t", headers=reader)).text == "hi"
        assert (await client.head("/v1/stream/a/t", headers=reader)).status_code == 200
        assert (await client.get("/v1/stream/b/t", headers=reader)).status_code == 403
        async with client.stream("GET", "/v1/stream/a/t?offset=-1&live=sse", headers=reader) as sse:
            assert sse.status_code == 200
        assert (await client.post("/v1/stream/a/t", headers=reader, content=b"x")).status_code == 403
        assert (await client.delete("/v1/stream/a/t", headers=reader)).status_code == 403
        # Forking a stream reads its history: it needs the right to read the source.
        forker = {"authorization": f"Bearer {policy.mint(publish=['a/**'], subscribe=['a/**'])}"}
        fork = await client.put("/v1/stream/a/fork", headers={**forker, "stream-forked-from": "/v1/stream/b/t"})
        assert fork.status_code == 403
        assert (await client.get("/v1/stream/b/t", headers=ops)).text == "secret"


async def test_prefix_is_configurable_and_can_be_off() -> None:
    hub = Hub("memory://", HubConfig(durable_prefix="/ds"))
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.put("/ds/a/b", headers={"content-type": "text/plain"}, content=b"x")).status_code == 201
        assert (await client.get("/topics/a/b")).json()["meta"] == {"durable": {"content_type": "text/plain"}}
        assert (await client.get("/v1/stream/a/b")).status_code == 404
    off = Hub("memory://", HubConfig(durable_prefix=None))
    async with serve_app(create_app(off)) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.put("/v1/stream/a", content=b"x")).status_code in (404, 405)


async def test_an_ssehub_topic_is_a_json_stream() -> None:
    hub = Hub("memory://")
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url) as client:
        await hub.publish("native", "message", {"a": 1})
        assert (await client.put("/v1/stream/native", headers={"content-type": "application/json"})).status_code == 200
        assert (await client.put("/v1/stream/native", headers={"content-type": "text/plain"})).status_code == 409
        r = await client.post("/v1/stream/native", headers={"content-type": "application/json"}, content=b"[2, 3]")
        assert r.status_code == 204 and r.headers["stream-next-offset"] == offsets.encode(3)
        assert (await client.get("/v1/stream/native")).json() == [{"a": 1}, 2, 3]


async def test_a_fork_source_may_be_named_by_url() -> None:
    hub = Hub("memory://")
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url) as client:
        await client.put("/v1/stream/src", headers={"content-type": "text/plain"}, content=b"abc")
        fork = await client.put("/v1/stream/fork", headers={"stream-forked-from": f"{url}/v1/stream/src"})
        assert fork.status_code == 201 and fork.headers["content-type"] == "text/plain"
        assert (await client.get("/v1/stream/fork")).text == "abc"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("PUT", "/v1/stream/bad name", {}, 400, "invalid_topic"),
        ("GET", "/v1/stream/x?offset=abc", {}, 400, "invalid_input"),
        ("PUT", "/v1/stream/x", {"stream-ttl": "1", "stream-expires-at": "2030-01-01T00:00:00Z"}, 400, "invalid_input"),
        ("POST", "/v1/stream/missing", {"content-type": "text/plain"}, 404, "not_found"),
        ("PATCH", "/v1/stream/x", {}, 405, "method_not_allowed"),
    ],
)
async def test_refusals_are_json_errors(
    method: str, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    hub = Hub("memory://")
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.request(method, path, headers=headers, content=b"body")
        assert r.status_code == status and r.json()["error"]["code"] == code
        assert r.headers["x-content-type-options"] == "nosniff"
