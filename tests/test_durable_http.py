"""ssehub's own rules on the Durable Streams surface, through real sockets (the suite covers the protocol):
the hub's token guards writes, the prefix is configurable or off, ssehub topics are JSON streams, and every
refusal is a JSON error with the protocol's headers."""

from __future__ import annotations

import httpx
import pytest

from ssehub import Hub, HubConfig
from ssehub.asgi import create_app
from ssehub.durable import offsets
from support import serve_app


async def test_the_token_guards_writes_and_not_reads() -> None:
    hub = Hub("memory://", HubConfig(token="s3cret"))
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url) as client:
        refused = await client.put("/v1/stream/t", headers={"content-type": "text/plain"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["x-content-type-options"] == "nosniff"
        auth = {"authorization": "Bearer s3cret", "content-type": "text/plain"}
        assert (await client.put("/v1/stream/t", headers=auth, content=b"hi")).status_code == 201
        assert (
            await client.post("/v1/stream/t", headers={"content-type": "text/plain"}, content=b"x")
        ).status_code == 401
        assert (await client.delete("/v1/stream/t")).status_code == 401
        assert (await client.get("/v1/stream/t")).text == "hi"


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
