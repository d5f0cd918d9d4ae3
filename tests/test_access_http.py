"""Access control through real sockets: every endpoint of a real `ssehub serve` with keys and tokens on.

The table walks every endpoint three times: with no credentials (401), with a valid token that lacks the
right (403), and with one that has it. Then: a run's token reads that run and no other; a token that
expires mid-stream is cut off and the client resumes with a fresh one, nothing lost or repeated; the Host
allow-list, the Origin check and CORS; the refusal to serve a network with no credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ssehub import AsyncClient, TokenExpired
from ssehub.access import mint_token
from support import Read, ServerProcess, free_port, read_sse

Start = Callable[..., ServerProcess]

KEY = "ops-key-0123456789abcdef"
SECRET = "the-jwt-secret-of-this-test-suite-0123456789"
ADMIN = {"authorization": f"Bearer {KEY}"}


def token(ttl: float = 60, **rights: list[str] | str) -> str:
    claims: dict[str, Any] = {k: v for k, v in rights.items() if k != "sub"}
    sub = rights.get("sub")
    return mint_token(SECRET, ttl=ttl, subject=sub if isinstance(sub, str) else None, **claims)


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def start_hub(server: Start, *extra: str, delay: str = "0.05") -> ServerProcess:
    return server(
        "--store",
        "memory://",
        "--api-key",
        f"ops={KEY}",
        "--jwt-secret",
        SECRET,
        "--demo",
        *extra,
        env={"SSEHUB_DEMO_DELAY": delay},
    )


def publish(base: str, topic: str, n: int = 1) -> None:
    body = [{"event": "tick", "data": i} for i in range(n)]
    httpx.post(f"{base}/topics/{topic}/events", json=body, headers=ADMIN, timeout=10).raise_for_status()


def start_run(base: str, headers: dict[str, str] | None = None, key: str | None = None) -> httpx.Response:
    extra = {"idempotency-key": key} if key else {}
    response = httpx.post(
        f"{base}/agents/chat",
        json={"message": "a long question"},
        headers={"prefer": "respond-async", **(headers or ADMIN), **extra},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response


def status_of(base: str, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> int:
    """The status of one request; a stream is closed as soon as it has answered."""
    with httpx.stream(method, base + path, headers=headers, timeout=10, **kwargs) as response:
        if response.status_code >= 400:
            response.read()
            error = response.json()["error"]
            assert error["code"] and error["message"], error
            if response.status_code == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
        return response.status_code


# -- every endpoint, three ways ---------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    method: str
    path: str
    #: The rights of a token that may (None: only an API key may).
    may: dict[str, list[str]] | None
    #: The rights of a valid token that may not.
    may_not: dict[str, list[str]]
    ok: tuple[int, ...] = (200,)
    headers: dict[str, str] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)


SSE = {"accept": "text/event-stream"}
JSON = {"accept": "application/json"}


def chat_request(chat_id: str) -> dict[str, Any]:
    return {"id": chat_id, "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}


def ag_ui_request(thread_id: str) -> dict[str, Any]:
    return {"threadId": thread_id, "runId": "r1", "messages": [{"id": "m1", "role": "user", "content": "hi"}]}


def rows(run: str, cancel_run: str) -> list[Row]:
    r = f"runs/{run}"
    agent_only = {"agents": ["other"], "subscribe": ["**"], "publish": ["**"]}
    return [
        Row("publish", "POST", "/topics/p/events", {"publish": ["p"]}, {"subscribe": ["p"]}, kwargs={"json": {}}),
        Row("subscribe", "GET", "/topics/s/events?after=0", {"subscribe": ["s"]}, {"publish": ["s"]}, headers=SSE),
        Row(
            "json page", "GET", "/topics/s/events?after=0", {"subscribe": ["s*"]}, {"subscribe": ["s/*"]}, headers=JSON
        ),
        Row("topic info", "GET", "/topics/s", {"subscribe": ["**"]}, {"publish": ["**"], "cancel": ["**"]}),
        Row("close", "POST", "/topics/c/close", {"publish": ["c"]}, {"subscribe": ["c"]}),
        Row("delete", "DELETE", "/topics/d", {"publish": ["d"]}, {"subscribe": ["d"], "cancel": ["d"]}),
        Row(
            "start a run",
            "POST",
            "/agents/chat",
            {"agents": ["chat"]},
            {"agents": ["other"], "subscribe": ["**"], "publish": ["**"]},
            ok=(202,),
            headers={"prefer": "respond-async"},
            kwargs={"json": {"message": "hi"}},
        ),
        Row("run status", "GET", f"/runs/{run}", {"subscribe": [r]}, {"subscribe": ["runs/other"], "cancel": [r]}),
        Row("run events", "GET", f"/runs/{run}/events", {"subscribe": ["runs/*"]}, {"cancel": [r]}, headers=SSE),
        Row("run topic", "GET", f"/topics/{r}/events?after=0", {"subscribe": [r]}, {"cancel": [r]}, headers=SSE),
        Row(
            "cancel",
            "POST",
            f"/runs/{cancel_run}/cancel",
            {"cancel": [f"runs/{cancel_run}"]},
            {"subscribe": [f"runs/{cancel_run}"]},
            ok=(200, 202),
        ),
        Row("useChat", "POST", "/chat/chat", {"agents": ["chat"]}, agent_only, kwargs={"json": chat_request("c1")}),
        Row(
            "useChat resume",
            "GET",
            "/chat/chat/c0/stream",
            {"subscribe": ["chats/chat/*"]},
            {"cancel": ["**"]},
            ok=(200, 204),  # 204 once the run has ended
        ),
        Row(
            "useChat cancel",
            "POST",
            "/chat/chat/c0/cancel",
            {"cancel": ["chats/**"]},
            {"subscribe": ["chats/**"]},
            ok=(200, 202),
        ),
        Row("AG-UI", "POST", "/ag-ui/chat", {"agents": ["chat"]}, agent_only, kwargs={"json": ag_ui_request("t1")}),
        Row(
            "AG-UI resume",
            "GET",
            "/ag-ui/chat/t0/stream",
            {"subscribe": ["threads/**"]},
            {"subscribe": ["chats/**"]},
            ok=(200, 204),
        ),
        Row(
            "metrics",
            "GET",
            "/metrics",
            None,
            {"subscribe": ["**"], "publish": ["**"], "cancel": ["**"], "agents": ["*"]},
        ),
    ]


def test_every_endpoint_refuses_no_credentials_and_the_wrong_right_and_takes_the_right_one(server: Start) -> None:
    hub = start_hub(server)
    publish(hub.url, "s", 3)
    for topic in ("c", "d"):
        publish(hub.url, topic)
    run = start_run(hub.url).json()["id"]
    cancel_run = start_run(hub.url).json()["id"]
    for path, body in (("/chat/chat", chat_request("c0")), ("/ag-ui/chat", ag_ui_request("t0"))):
        with httpx.stream("POST", hub.url + path, json=body, headers=ADMIN, timeout=10) as started:
            assert started.status_code == 200 and started.headers["x-run-token"]
    for row in rows(run, cancel_run):
        what = f"{row.name}: {row.method} {row.path}"
        assert status_of(hub.url, row.method, row.path, row.headers, **row.kwargs) == 401, what
        lacking = {**row.headers, **bearer(token(**row.may_not))}  # type: ignore[arg-type]
        assert status_of(hub.url, row.method, row.path, lacking, **row.kwargs) == 403, what
        right = {**row.headers, **(bearer(token(**row.may)) if row.may is not None else ADMIN)}  # type: ignore[arg-type]
        assert status_of(hub.url, row.method, row.path, right, **row.kwargs) in row.ok, what

    # The listings need credentials, and show only what the caller may see.
    assert status_of(hub.url, "GET", "/topics", {}) == 401
    assert status_of(hub.url, "GET", "/agents", {}) == 401
    listed = httpx.get(f"{hub.url}/topics", headers=bearer(token(subscribe=["s", "c"])), timeout=10).json()
    assert [t["topic"] for t in listed["topics"]] == ["c", "s"]
    assert httpx.get(f"{hub.url}/topics", headers=bearer(token(publish=["**"])), timeout=10).json()["topics"] == []
    agents = httpx.get(f"{hub.url}/agents", headers=bearer(token(agents=["other"])), timeout=10).json()
    assert agents == {"agents": []}
    agents = httpx.get(f"{hub.url}/agents", headers=bearer(token(agents=["*"])), timeout=10).json()
    assert [a["name"] for a in agents["agents"]] == ["chat"]

    # What needs no credentials at all: liveness, the browser client, the demo page and its token.
    for method, path in [("GET", "/healthz"), ("GET", "/_ssehub/ssehub.js"), ("GET", "/"), ("POST", "/demo/token")]:
        assert status_of(hub.url, method, path, {}) == 200, path


def test_a_run_token_reads_and_cancels_that_run_and_no_other(server: Start) -> None:
    hub = start_hub(server)
    a, b = start_run(hub.url), start_run(hub.url)
    run_a, run_b = a.json()["id"], b.json()["id"]
    token_a = a.json()["token"]
    assert a.headers["x-run-token"] == token_a and a.headers["x-run-id"] == run_a
    mine = bearer(token_a)

    for method, path, headers in [
        ("GET", f"/runs/{run_b}/events", SSE),
        ("GET", f"/topics/runs/{run_b}/events?after=0", SSE),
        ("GET", f"/topics/runs/{run_b}/events?after=0", JSON),
        ("GET", f"/runs/{run_b}", {}),
        ("GET", f"/topics/runs/{run_b}", {}),
        ("POST", f"/runs/{run_b}/cancel", {}),
        ("POST", f"/topics/runs/{run_b}/events", {}),
        ("DELETE", f"/topics/runs/{run_b}", {}),
    ]:
        assert status_of(hub.url, method, path, {**headers, **mine}, json={}) == 403, (method, path)
    listed = httpx.get(f"{hub.url}/topics", params={"prefix": "runs/"}, headers=mine, timeout=10).json()
    assert [t["topic"] for t in listed["topics"]] == [f"runs/{run_a}"]
    assert "owner" not in listed["topics"][0]["meta"]  # host and pid are for keys only
    assert "owner" in httpx.get(f"{hub.url}/topics/runs/{run_a}", headers=ADMIN, timeout=10).json()["meta"]
    assert httpx.get(f"{hub.url}/runs/{run_b}", headers=ADMIN, timeout=10).json()["status"] == "running"

    # Its own run: the events (JSON and SSE), the status, and the cancel.
    page = httpx.get(f"{hub.url}/topics/runs/{run_a}/events", params={"after": 0}, headers={**JSON, **mine}, timeout=10)
    assert page.status_code == 200 and page.json()["events"]
    assert httpx.get(f"{hub.url}/runs/{run_a}", headers=mine, timeout=10).json()["status"] == "running"
    cancelled = httpx.post(f"{hub.url}/runs/{run_a}/cancel", headers=mine, timeout=10)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    events = [e.event for e in asyncio.run(read_all_sse(f"{hub.url}/runs/{run_a}/events", mine))]
    assert events[-1] == "cancelled"
    assert httpx.get(f"{hub.url}/runs/{run_b}", headers=ADMIN, timeout=10).json()["status"] == "running"


async def read_all_sse(url: str, headers: dict[str, str]) -> list[Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await read_sse(client, url, headers=headers)).events


async def test_a_listing_pages_through_only_what_the_token_may_read(server: Start) -> None:
    hub = start_hub(server)
    for name in ("a/1", "a/2", "a/3", "a/4", "a/5", "a/5/deep", "b/1", "b/2", "b/3", "c"):
        publish(hub.url, name)
    seen = token(subscribe=["a/*", "b/2"])
    names: list[str] = []
    after = ""
    async with httpx.AsyncClient(base_url=hub.url, headers=bearer(seen), timeout=10) as client:
        while True:
            page = (await client.get("/topics", params={"limit": 2, "after": after})).json()
            names += [t["topic"] for t in page["topics"]]
            if not page["next_after"]:
                break
            after = page["next_after"]
        assert names == ["a/1", "a/2", "a/3", "a/4", "a/5", "b/2"]
        assert [t["topic"] for t in (await client.get("/topics", params={"prefix": "b"})).json()["topics"]] == ["b/2"]
        assert (await client.get("/topics", params={"prefix": "c"})).json() == {"topics": [], "next_after": None}
    async with AsyncClient(hub.url, token=seen) as ours:
        assert [t.name for t in await ours.topics("a/")] == ["a/1", "a/2", "a/3", "a/4", "a/5"]


def test_the_subject_that_started_a_run_owns_it(server: Start) -> None:
    hub = start_hub(server)
    alice = bearer(token(agents=["chat"], sub="alice"))
    started = start_run(hub.url, alice, key="same-key")
    run = started.json()["id"]
    # A later token of the same subject reads and cancels it through /runs; another subject cannot.
    alice_later = bearer(token(sub="alice"))
    assert httpx.get(f"{hub.url}/runs/{run}", headers=alice_later, timeout=10).status_code == 200
    bob = bearer(token(agents=["chat"], sub="bob"))
    assert httpx.get(f"{hub.url}/runs/{run}", headers=bob, timeout=10).status_code == 403
    assert httpx.post(f"{hub.url}/runs/{run}/cancel", headers=bob, timeout=10).status_code == 403
    assert httpx.get(f"{hub.url}/runs/no-such-run", headers=bob, timeout=10).status_code == 403  # no 404 to probe
    # An Idempotency-Key belongs to whoever sent it: bob's same key starts bob's own run.
    assert start_run(hub.url, bob, key="same-key").json()["id"] != run
    again = start_run(hub.url, alice, key="same-key")
    assert again.json()["id"] == run and again.json()["token"]
    assert httpx.post(f"{hub.url}/runs/{run}/cancel", headers=alice_later, timeout=10).status_code == 202


def test_a_conversation_belongs_to_the_subject_that_started_it(server: Start) -> None:
    hub = start_hub(server)
    alice = bearer(token(agents=["chat"], sub="alice"))
    bob = bearer(token(agents=["chat"], sub="bob"))
    for path, body, stream in (
        ("/chat/chat", chat_request("mine"), "/chat/chat/mine"),
        ("/ag-ui/chat", ag_ui_request("mine"), "/ag-ui/chat/mine"),
    ):
        assert status_of(hub.url, "POST", path, alice, json=body) == 200
        # Another subject can neither continue it (which would cancel alice's run), nor read it, nor stop it.
        assert status_of(hub.url, "POST", path, bob, json=body) == 403
        assert status_of(hub.url, "GET", f"{stream}/stream", bob) == 403
        assert status_of(hub.url, "POST", f"{stream}/cancel", bob) == 403
        assert status_of(hub.url, "GET", f"{stream}/stream", bearer(token(sub="alice"))) in (200, 204)
        assert status_of(hub.url, "POST", f"{stream}/cancel", bearer(token(sub="alice"))) in (200, 202)
        assert status_of(hub.url, "POST", path, alice, json=body) == 200  # and she may go on
    # A conversation that does not exist: no way to tell it from somebody else's.
    assert status_of(hub.url, "GET", "/chat/chat/nobody/stream", bob) == 403


def test_formatted_streams_end_with_the_token(server: Start) -> None:
    hub = start_hub(server, "--heartbeat", "0.4", "--retry", "250")
    publish(hub.url, "fmt", 2)

    async def read(query: str) -> Read:
        async with httpx.AsyncClient(timeout=10) as client:
            expiring = bearer(token(ttl=1, subscribe=["fmt"]))
            return await read_sse(client, f"{hub.url}/topics/fmt/events?{query}", headers=expiring)

    native = asyncio.run(read("after=0&compact=1"))
    assert native.ended and native.events[-1].event == "auth_expired"
    for query in ("format=ai-sdk", "format=ag-ui"):
        other = asyncio.run(read(query))
        # Their parsers know no auth_expired: the stream ends with a retry hint; the reconnect gets its 401.
        assert other.status == 200 and other.ended and other.retry == 250, query
        assert b"auth_expired" not in other.raw, query


def test_credentials_from_the_header_in_any_case_the_query_or_the_cookie(server: Start) -> None:
    hub = start_hub(server, "--cookie-name", "hubtok")
    publish(hub.url, "t")
    url = f"{hub.url}/topics/t"
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert httpx.get(url, headers={"authorization": f"{scheme} {KEY}"}, timeout=10).status_code == 200
    assert httpx.get(url, params={"token": KEY}, timeout=10).status_code == 200
    assert httpx.get(url, headers={"cookie": f"other=1; hubtok={KEY}"}, timeout=10).status_code == 200
    assert httpx.get(url, headers={"cookie": f"ssehub_token={KEY}"}, timeout=10).status_code == 401  # not its name
    assert httpx.get(url, headers={"authorization": f"Basic {KEY}"}, timeout=10).status_code == 401
    # A credential that is given and wrong is refused, whatever else comes with it.
    wrong = {"authorization": "Bearer wrong-0123456789abc", "cookie": f"hubtok={KEY}"}
    assert httpx.get(url, headers=wrong, timeout=10).status_code == 401
    assert httpx.get(url, params={"token": token(ttl=1, subscribe=["t"])}, timeout=10).status_code == 200


# -- expiry mid-stream ------------------------------------------------------------------------------------------


def test_an_expired_token_ends_the_stream_with_auth_expired_and_a_retry_hint(server: Start) -> None:
    hub = start_hub(server, "--heartbeat", "0.4", "--retry", "250")
    publish(hub.url, "idle", 2)

    async def read(expiring: str) -> tuple[Read, float]:
        began = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            got = await read_sse(client, f"{hub.url}/topics/idle/events?after=0", headers=bearer(expiring))
        return got, time.monotonic() - began

    got, took = asyncio.run(read(token(ttl=1, subscribe=["idle"])))
    assert got.status == 200 and got.ended
    assert [e.event for e in got.events] == ["tick", "tick", "auth_expired"]
    assert got.events[-1].id == "2"  # no id of its own: a reconnect resumes after the last event read
    assert json.loads(got.events[-1].data)["last_id"] == 2
    assert got.raw.endswith(b"\n\n") and b"retry: 250\n" in got.raw.rsplit(b"\n\n", 2)[-2]
    assert took < 4  # an idle stream is cut on the hub's heartbeat clock, not left open
    # The access line says who read, and why the stream ended; a key is named, never shown.
    deadline = time.monotonic() + 5
    while "ended=auth_expired" not in hub.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in hub.output().splitlines() if "ended=auth_expired" in line)
    assert "subject=token" in line and "topic=idle" in line, line
    assert "subject=key:ops" in hub.output() and KEY not in hub.output()
    # An expired token is refused with a code that says so, for the client to get a fresh one.
    stale = token(ttl=1, subscribe=["idle"])
    time.sleep(2.1)
    answer = httpx.get(f"{hub.url}/topics/idle", headers=bearer(stale), timeout=10)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "token_expired"
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_the_client_resumes_with_a_fresh_token_and_loses_nothing(server: Start) -> None:
    hub = start_hub(server, "--heartbeat", "0.3")
    minted: list[float] = []

    async def fresh() -> str:
        minted.append(time.monotonic())
        return token(ttl=1, subscribe=["live"])

    async def produce() -> None:
        async with AsyncClient(hub.url, token=KEY) as publisher:
            for n in range(120):
                await publisher.publish("live", "n", n)
                await asyncio.sleep(0.03)
            await publisher.close_topic("live")

    async with AsyncClient(hub.url, token=fresh) as client:
        producer = asyncio.create_task(produce())
        got = [(e.id, e.json()) async for e in client.subscribe("live", after=0)]
        await producer
    assert got == [(n + 1, n) for n in range(120)]  # every event once, in order, across the cuts
    assert len(minted) >= 2, minted  # the stream was cut, and resumed with a fresh token

    # With a plain string there is nothing to refresh: the client says the token expired.
    publish(hub.url, "quiet")
    async with AsyncClient(hub.url, token=token(ttl=1, subscribe=["quiet"])) as client:
        with pytest.raises(TokenExpired):
            async for _ in client.subscribe("quiet", after=0):
                pass


def test_the_cli_refreshes_with_its_token_command(server: Start) -> None:
    hub = start_hub(server, "--heartbeat", "0.3")
    command = f"{sys.executable} -m ssehub token --secret {SECRET} --subscribe cli --ttl 2"
    tail = subprocess.Popen(
        [sys.executable, "-m", "ssehub", "tail", "cli", "--after", "0", "--wait", "--url", hub.url],
        env={**os.environ, "SSEHUB_TOKEN_COMMAND": command},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for n in range(30):
            httpx.post(f"{hub.url}/topics/cli/events", json={"event": "n", "data": n}, headers=ADMIN, timeout=10)
            time.sleep(0.2)
        httpx.post(f"{hub.url}/topics/cli/close", headers=ADMIN, timeout=10)
        out, err = tail.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            tail.kill()
    assert tail.returncode == 0, err
    assert [line.split()[0] for line in out.splitlines()] == [str(n) for n in range(1, 31)]


# -- Host, Origin, CORS ------------------------------------------------------------------------------------------


def test_a_bad_host_is_refused(server: Start) -> None:
    hub = server("--store", "memory://")
    for path in ("/healthz", "/topics"):
        refused = httpx.get(hub.url + path, headers={"host": "evil.example.com"}, timeout=10)
        assert refused.status_code == 421 and refused.json()["error"]["code"] == "host_not_allowed"
    for host in (f"localhost:{hub.port}", f"127.0.0.1:{hub.port}", "[::1]"):
        assert httpx.get(f"{hub.url}/topics", headers={"host": host}, timeout=10).status_code == 200, host
    named = server("--store", "memory://", "--allowed-hosts", "hub.example.com", "--allowed-hosts", "127.0.0.1")
    assert httpx.get(f"{named.url}/healthz", headers={"host": "hub.example.com"}, timeout=10).status_code == 200
    assert httpx.get(f"{named.url}/healthz", headers={"host": "localhost"}, timeout=10).status_code == 421


def test_a_cross_origin_post_with_a_disallowed_origin_changes_nothing(server: Start) -> None:
    hub = start_hub(server, "--cors-origin", "https://app.example.com")
    evil = {"origin": "https://evil.example.com", **ADMIN}
    for content_type, body in [("text/plain", "hi"), ("application/json", '{"data": 1}')]:
        refused = httpx.post(
            f"{hub.url}/topics/t/events", content=body, headers={**evil, "content-type": content_type}, timeout=10
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
    assert httpx.get(f"{hub.url}/topics/t", headers=ADMIN, timeout=10).status_code == 404  # nothing appended
    for origin in ("null", "https://app.example.com.evil.com", "http://app.example.com"):
        headers = {**ADMIN, "origin": origin, "content-type": "text/plain"}
        assert httpx.post(f"{hub.url}/topics/t/events", content="x", headers=headers, timeout=10).status_code == 403
    # Starting runs and deleting are state changes too.
    demo = httpx.post(f"{hub.url}/demo/token", headers={"origin": "https://evil.example.com"}, timeout=10)
    assert demo.status_code == 403
    assert httpx.post(f"{hub.url}/agents/chat", json={}, headers=evil, timeout=10).status_code == 403
    publish(hub.url, "kept")
    assert httpx.delete(f"{hub.url}/topics/kept", headers=evil, timeout=10).status_code == 403
    assert httpx.get(f"{hub.url}/topics/kept", headers=ADMIN, timeout=10).status_code == 200
    # The hub's own pages (same origin) and the allowed origin may.
    same = {**ADMIN, "origin": f"http://127.0.0.1:{hub.port}", "content-type": "text/plain"}
    assert httpx.post(f"{hub.url}/topics/t/events", content="x", headers=same, timeout=10).json() == {"ids": [1]}
    app = {**ADMIN, "origin": "https://app.example.com", "content-type": "text/plain"}
    allowed = httpx.post(f"{hub.url}/topics/t/events", content="y", headers=app, timeout=10)
    assert allowed.json() == {"ids": [2]}
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert allowed.headers["vary"] == "Origin"


def test_cors_preflights_and_headers(server: Start) -> None:
    hub = start_hub(server, "--cors-origin", "https://app.example.com")
    preflight = {
        "origin": "https://app.example.com",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, idempotency-key",
    }
    for path in ("/topics/t/events", "/agents/chat", "/runs/x/cancel", "/topics/t"):
        answer = httpx.options(hub.url + path, headers=preflight, timeout=10)
        assert answer.status_code == 204, path
        allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "last-event-id", "idempotency-key", "content-type"} <= allowed
        assert {"GET", "POST", "DELETE"} <= {
            m.strip() for m in answer.headers["access-control-allow-methods"].split(",")
        }
        assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
        assert answer.headers["access-control-allow-credentials"] == "true"
    refused = httpx.options(f"{hub.url}/topics/t/events", headers={**preflight, "origin": "https://evil.example.com"})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers

    # A run started from the app's origin: its ids and Location are readable there; so is a stream.
    origin = {"origin": "https://app.example.com"}
    started = start_run(hub.url, {**ADMIN, **origin})
    exposed = {h.strip().lower() for h in started.headers["access-control-expose-headers"].split(",")}
    assert {"location", "x-run-id", "x-run-token"} <= exposed
    run = started.json()["id"]
    with httpx.stream("GET", f"{hub.url}/runs/{run}/events", headers={**SSE, **ADMIN, **origin}, timeout=10) as r:
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
    # No Origin, or another one: no CORS headers at all.
    plain = httpx.get(f"{hub.url}/runs/{run}", headers=ADMIN, timeout=10)
    assert "access-control-allow-origin" not in plain.headers
    other = httpx.get(f"{hub.url}/runs/{run}", headers={**ADMIN, "origin": "https://evil.example.com"}, timeout=10)
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


# -- safe defaults and the options -------------------------------------------------------------------------------


def serve(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", "--store", "memory://", "--port", str(free_port()), *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_no_credentials_on_a_network_address_refuses_to_start(server: Start) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        done = serve("--host", host)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"ssehub serve: --host {host} with no credentials"), done.stderr
        assert "--no-auth" in done.stderr
    # On loopback it starts, and says that it is open.
    local = server("--store", "memory://")
    assert "no credentials configured, so listening on loopback only" in local.output()
    # --no-auth says so; credentials say which.
    opened = server("--store", "memory://", "--host", "0.0.0.0", "--no-auth")
    assert "--no-auth: anyone who reaches 0.0.0.0" in opened.output()
    assert httpx.post(f"{opened.url}/topics/t/events", json={}, timeout=10).status_code == 200
    keyed = server("--store", "memory://", "--host", "0.0.0.0", "--api-key", f"ops={KEY}")
    assert "access control: 1 API key (ops)" in keyed.output() and KEY not in keyed.output()
    assert httpx.post(f"{keyed.url}/topics/t/events", json={}, timeout=10).status_code == 401


KEYS_FILE = "# keys of the build farm\nci=ci-key-0123456789abcdef\n"
CASES = [
    (["--api-key", "nosecret"], {}, "--api-key: an API key is NAME=SECRET"),
    (["--api-key", "ops=short"], {}, "--api-key: the secret of API key 'ops' is shorter than 16 characters"),
    ([], {"SSEHUB_API_KEYS": f"ops={KEY},bad"}, "SSEHUB_API_KEYS: an API key is NAME=SECRET"),
    (["--token", "short"], {}, "--token: the secret of API key 'token' is shorter than 16 characters"),
    (["--api-key", f"ops={KEY}", "--api-key", "ops=another-key-0123456789"], {}, "the API key 'ops' is given twice"),
    (["--api-keys-file", "nope.keys"], {}, "nope.keys: cannot read the API keys file"),
    (["--jwt-secret", "short"], {}, "the JWT secret must be at least 32 bytes"),
    (["--jwt-public-key", "nope.pem"], {}, "--jwt-public-key: cannot read nope.pem"),
    (["--jwt-public-key", "keys"], {}, "not a PEM public key"),
    (["--api-key", f"ops={KEY}", "--no-auth"], {}, "--no-auth, yet credentials are configured"),
    (["--cors-origin", "app.example.com"], {}, "an origin is scheme://host[:port]"),
    (["--cookie-name", "a;b"], {}, "invalid cookie name"),
    (["--jwt-public-key", "public.pem", "--demo"], {}, "--demo with access control needs --jwt-secret or an API key"),
]


@pytest.mark.parametrize(("args", "env", "message"), CASES)
def test_bad_access_options_get_one_line(tmp_path: Path, args: list[str], env: dict[str, str], message: str) -> None:
    (tmp_path / "keys").write_text(KEYS_FILE)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "public.pem").write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    done = serve(*args, env=env, cwd=tmp_path)
    assert done.returncode in (1, 2), done
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr, done.stderr


def test_keys_from_the_environment_and_a_file_and_masked_in_print_config(server: Start, tmp_path: Path) -> None:
    (tmp_path / "keys").write_text(KEYS_FILE)
    hub = server(
        "--store",
        "memory://",
        "--api-keys-file",
        str(tmp_path / "keys"),
        env={"SSEHUB_API_KEYS": f"ops={KEY}, deploy=deploy-key-0123456789"},
    )
    for key in (KEY, "deploy-key-0123456789", "ci-key-0123456789abcdef"):
        assert httpx.get(f"{hub.url}/topics", headers=bearer(key), timeout=10).status_code == 200
    assert "3 API keys (ci, deploy, ops)" in hub.output()
    shown = subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", "--print-config", "--api-key", f"ops={KEY}", "--jwt-secret", SECRET],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0 and KEY not in shown.stdout and SECRET not in shown.stdout
    assert 'api-key = "***"' in shown.stdout and 'jwt-secret = "***"' in shown.stdout


def test_public_key_tokens_minted_by_ssehub_token(server: Start, tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "private.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "public.pem").write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hub = server("--store", "memory://", "--jwt-public-key", str(tmp_path / "public.pem"), "--jwt-audience", "hub-1")
    minted = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssehub",
            "token",
            "--private-key",
            str(tmp_path / "private.pem"),
            "--subscribe",
            "pub/*",
            "--publish",
            "pub/*",
            "--audience",
            "hub-1",
            "--ttl",
            "5m",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert minted.returncode == 0, minted.stderr
    signed = bearer(minted.stdout.strip())
    assert httpx.post(f"{hub.url}/topics/pub/a/events", json={}, headers=signed, timeout=10).json() == {"ids": [1]}
    assert httpx.post(f"{hub.url}/topics/priv/events", json={}, headers=signed, timeout=10).status_code == 403
    # The public key cannot mint: no run tokens; and a token for another audience is refused.
    other = mint_token(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        subscribe=["pub/*"],
        audience="hub-2",
        algorithm="RS256",
    )
    assert httpx.get(f"{hub.url}/topics/pub/a", headers=bearer(other), timeout=10).status_code == 401


def test_ssehub_token_refuses_what_the_hub_would(tmp_path: Path) -> None:
    def token_command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ssehub", "token", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if k != "SSEHUB_JWT_SECRET"},
        )

    for args, message in [
        ((), "give --secret"),
        (("--secret", "short"), "HS256 needs a secret of at least 32 bytes"),
        (("--secret", SECRET, "--subscribe", "bad topic"), "invalid topic pattern"),
        (("--private-key", str(tmp_path / "nope.pem")), "cannot read"),
    ]:
        done = token_command(*args)
        assert done.returncode == 1 and done.stderr.startswith("ssehub token: ") and message in done.stderr, done
    bad_ttl = token_command("--secret", SECRET, "--ttl", "soon")
    assert bad_ttl.returncode == 2 and "must be a duration" in bad_ttl.stderr
