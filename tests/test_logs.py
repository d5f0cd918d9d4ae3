"""Logs of `ssehub serve`: an access line per request and per stream, a line per run, plain or JSON, and
expected conditions (a store that is down at start) as one line each, never a traceback. Also /readyz."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ssehub import Hub
from ssehub.asgi import create_app
from ssehub.logs import JSONFormatter, log_fields, plain_fields
from support import RedisServer, ServerProcess, eventually, missing, read_sse, serve_app

Start = Callable[..., ServerProcess]


def lines_of(srv: ServerProcess, prefix: str = "{") -> list[str]:
    return [line for line in srv.output().splitlines() if line.startswith(prefix)]


async def exercise(srv: ServerProcess) -> None:
    """A publish, a stream read to the end of its topic, and a demo run."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
        await c.post("/topics/logs/t/events", json=[{"event": "a", "data": 1}, {"event": "b", "data": 2}])
        reader = asyncio.create_task(read_sse(c, "/topics/logs/t/events?after=1"))
        await asyncio.sleep(0.3)  # the stream is open before the rest is published
        await c.post("/topics/logs/t/events", json={"event": "c", "data": 3})
        await c.post("/topics/logs/t/close")
        got = await reader
        assert got.ended and [e.id for e in got.events] == ["2", "3"]
        run = await c.post("/agents/chat", json={"message": "hi"})
        assert run.json()["status"] == "completed"


async def test_json_lines_for_requests_streams_and_runs(server: Start) -> None:
    srv = server("--store", "memory://", "--demo", "--log-format", "json", env={"SSEHUB_DEMO_DELAY": "0"})
    await exercise(srv)
    await eventually(lambda: any('"msg": "run"' in line for line in lines_of(srv)))
    srv.stop()
    records = [json.loads(line) for line in lines_of(srv)]
    # Everything on standard error is JSON, uvicorn's lines too (the start banner is printed on stdout).
    stderr_lines = [line for line in srv.output().splitlines() if not line.startswith(("ssehub serving", "demo chat"))]
    assert all(line.startswith("{") for line in stderr_lines), stderr_lines
    assert {"time", "level", "logger", "msg"} <= set(records[0])
    stream = next(r for r in records if r["msg"] == "access" and r["path"] == "/topics/logs/t/events" and "topic" in r)
    assert stream["method"] == "GET" and stream["status"] == 200
    assert (stream["topic"], stream["after"], stream["events"], stream["ended"]) == ("logs/t", 1, 2, "closed")
    assert stream["bytes"] > 0 and stream["seconds"] > 0 and stream["client"] == "127.0.0.1"
    publish = next(
        r for r in records if r["msg"] == "access" and r["method"] == "POST" and r["path"].endswith("/events")
    )
    assert publish["status"] == 200 and "topic" not in publish
    run = next(r for r in records if r["msg"] == "run")
    assert (
        run["agent"] == "chat"
        and run["status"] == "completed"
        and run["events"] > 10
        and run["logger"] == "ssehub.runs"
    )
    assert "Traceback" not in srv.output()


async def test_plain_lines_and_the_switch_off(server: Start) -> None:
    srv = server("--store", "memory://", "--demo", env={"SSEHUB_DEMO_DELAY": "0"})
    await exercise(srv)
    srv.stop()
    access = [line for line in srv.output().splitlines() if " ssehub.access: access " in line]
    stream = next(line for line in access if "topic=" in line)
    assert "method=GET path=/topics/logs/t/events status=200 bytes=" in stream
    assert "topic=logs/t after=1 events=2 ended=closed" in stream

    quiet = server("--store", "memory://", "--demo", "--no-access-log", env={"SSEHUB_DEMO_DELAY": "0"})
    await exercise(quiet)
    quiet.stop()
    assert " ssehub.access" not in quiet.output()
    assert " ssehub.runs: run " in quiet.output()  # the run line is not an access line


async def test_a_store_down_at_start_is_one_line_and_readiness_says_so(server: Start, tmp_path: Path) -> None:
    if importlib.util.find_spec("redis") is None:  # the client `ssehub serve --store redis://` needs
        missing("redis-py is not installed: scripts/setup installs the redis extra")
    redis = RedisServer(tmp_path / "redis", persistent=False)  # its port is chosen; it is not started yet
    srv = server("--store", redis.url, env={"SSEHUB_DEMO_DELAY": "0"})
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
            assert (await c.get("/healthz")).status_code == 200  # alive
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "store_unavailable"
            failed = await c.post("/topics/t/events", json={"event": "a"})
            assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable"
            redis.start()
            # Redis is back: ready again, without a restart.
            for _ in range(100):
                if (await c.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await c.get("/readyz")).json() == {"status": "ready"}
            assert (await c.post("/topics/t/events", json={"event": "a"})).json() == {"ids": [1]}
        srv.stop()
    finally:
        redis.kill()
    output = srv.output()
    assert "Traceback" not in output and "never retrieved" not in output, output
    unavailable = [line for line in output.splitlines() if "is unavailable" in line and "WARNING" in line]
    assert len(unavailable) == 1 and "Redis at" in unavailable[0], output  # said once, in one line


async def test_readyz_answers_503_while_draining() -> None:
    hub = Hub("memory://")
    app = create_app(hub)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/readyz")).json() == {"status": "ready"}
        hub.drain()
        draining = await c.get("/readyz")
        assert (draining.status_code, draining.json()) == (503, {"status": "draining"})


async def test_the_subject_hook_of_access_control(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever checks credentials names the caller in scope["ssehub.subject"]; the access line carries it."""
    hub = Hub("memory://")
    inner = create_app(hub, access_log=True)

    async def authenticated(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["ssehub.subject"] = "key:ops"
        await inner(scope, receive, send)

    authenticated.state = inner.state  # type: ignore[attr-defined]  # serve_app drains the hub it finds there
    caplog.set_level(logging.INFO, logger="ssehub.access")
    async with serve_app(authenticated) as url, httpx.AsyncClient(base_url=url) as c:
        await c.post("/topics/t/events", json={"event": "a"})
    record = next(r for r in caplog.records if r.name == "ssehub.access")
    assert record.ssehub["subject"] == "key:ops"  # type: ignore[attr-defined]
    assert "subject=key:ops" in record.getMessage()


def test_field_rendering() -> None:
    fields = {"a": 1, "b": "x y", "c": None, "d": 0.123456, "e": "", "f": [1], "g": True, "h": float("inf"), "i": "/p"}
    fields |= {"j": 0.000123456, "k": 0.0, "l": 2.5e-7, "m": -0.0004}
    for _ in range(2):  # the second time, the strings as written before
        assert plain_fields(fields) == (
            'a=1 b="x y" d=0.123 e="" f=[1] g=true h=Infinity i=/p j=0.000123 k=0.0 l=2.5e-07 m=-0.0004'
        )
    logger = logging.getLogger("ssehub.test-fields")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_fields(logger, "thing", n=2, why='said "no"')
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == 'thing n=2 why="said \\"no\\""'
    line = json.loads(JSONFormatter().format(records[0]))
    assert (line["msg"], line["n"], line["why"], line["level"]) == ("thing", 2, 'said "no"', "info")
