"""SIGTERM stops a hub the same way however it is run, with real processes:

    ssehub serve                                   the command
    uvicorn module:app                             app = create_app(hub)
    uvicorn module:api                             FastAPI(lifespan=hub.lifespan), the hub mounted at /sse

In each: open streams end at once with a `retry:` hint (while the process still runs: it waits for a
run); a publish whose body is still arriving is finished and stored; a request waiting for a run's result
gets it; a run that finishes within the grace completes, one that does not is handed back as `failed`
with the reason; then the process exits, and a restarted one serves the rest of every stream.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support import ServerProcess, read_sse

Start = Callable[..., ServerProcess]

APP = """
import asyncio, os
from ssehub import Hub, HubConfig, Run
from ssehub.asgi import create_app

hub = Hub("sqlite:///hub.db", HubConfig(run_grace=float(os.environ["GRACE"]), retry_ms=750))

@hub.agent("sleepy")
async def sleepy(run: Run, body: dict) -> dict:
    await run.text("started")
    await asyncio.sleep(body["seconds"])
    await run.text("finished")
    return {"slept": body["seconds"]}

app = create_app(hub)
"""

MOUNTED = """
from fastapi import FastAPI
from plain import create_app, hub

api = FastAPI(lifespan=hub.lifespan)
api.mount("/sse", create_app(hub))

@api.get("/hello")
def hello() -> dict:
    return {"hello": "world"}
"""

WAYS = ["ssehub serve", "uvicorn module:app", "mounted in FastAPI"]
GRACE = 3.0


def start_way(way: str, server: Start, tmp_path: Path) -> ServerProcess:
    (tmp_path / "plain.py").write_text(textwrap.dedent(APP))
    (tmp_path / "mounted.py").write_text(textwrap.dedent(MOUNTED))
    env = {"GRACE": str(GRACE), "PYTHONPATH": str(tmp_path), "SSEHUB_DEMO_DELAY": "0.01"}
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "info"]
    if way == "ssehub serve":
        return server(
            "--store",
            "sqlite:///hub.db",
            "--demo",
            "--retry",
            "750",
            "--run-grace",
            str(GRACE),
            "--no-access-log",
            env=env,
        )
    if way == "uvicorn module:app":
        return server(command=[*uvicorn, "plain:app"], env=env)
    return server(command=[*uvicorn, "mounted:api"], env=env, prefix="/sse")


def slow_publish(url: str, topic: str, body: bytes) -> socket.socket:
    """A publish whose request has arrived but whose body has not all been sent yet."""
    parts = httpx.URL(url)
    sock = socket.create_connection((parts.host, parts.port or 80), timeout=10)
    head = (
        f"POST {parts.raw_path.decode().rstrip('/')}/topics/{topic}/events HTTP/1.1\r\nHost: {parts.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def finish_publish(sock: socket.socket, body: bytes) -> tuple[int, dict[str, list[int]]]:
    sock.sendall(body[len(body) // 2 :])
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


@pytest.mark.parametrize("way", WAYS)
async def test_sigterm_stops_every_way_of_running_the_same(way: str, server: Start, tmp_path: Path) -> None:
    srv = start_way(way, server, tmp_path)
    agent, quick, stuck = ("chat", {"message": "hi"}, None) if way == "ssehub serve" else ("sleepy", None, None)
    if agent == "sleepy":
        quick, stuck = {"seconds": 1.0}, {"seconds": 3600}
    async with httpx.AsyncClient(base_url=srv.url, timeout=15) as c:
        assert (await c.post("/topics/t/events", json={"event": "log", "data": 1})).status_code == 200
        topic_read = asyncio.create_task(read_sse(c, "/topics/t/events?after=0"))
        started = await c.post(f"/agents/{agent}", json=quick, headers={"prefer": "respond-async"})
        assert started.status_code == 202, started.text
        quick_id = started.json()["id"]
        run_read = asyncio.create_task(read_sse(c, f"/runs/{quick_id}/events"))
        waiter = asyncio.create_task(c.post(f"/agents/{agent}", json=quick))  # waits for the result as JSON
        stuck_id = None
        if stuck is not None:
            stuck_id = (await c.post(f"/agents/{agent}", json=stuck, headers={"prefer": "respond-async"})).json()["id"]
        body = json.dumps([{"event": "big", "data": "x" * 50_000}]).encode()
        publishing = await asyncio.to_thread(slow_publish, srv.url, "t", body)
        while not (topic_read.done() or run_read.done()) and (await c.get("/topics/t")).json()["subscribers"] < 1:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # every request above has reached the app

        assert srv.proc is not None
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        topic_got, run_got = await asyncio.wait_for(asyncio.gather(topic_read, run_read), 10)
        drained_in = time.monotonic() - signalled
        # The streams were ended by the server, with the hint, while it still waits for its runs.
        assert srv.proc.poll() is None, "the process exited before it drained its streams"
        for got in (topic_got, run_got):
            hint = got.raw.rpartition(b"retry: ")[2]
            assert got.ended and hint.endswith(b"\n\n") and 750 <= int(hint[:-2]) <= 1500, got.raw[-200:]
        assert [e.data for e in topic_got.events][:1] == ["1"]
        status, answer = await asyncio.to_thread(finish_publish, publishing, body)
        assert (status, answer) == (200, {"ids": [2]})
        waited = await asyncio.wait_for(waiter, GRACE + 10)
        assert waited.status_code == 200 and waited.json()["status"] == "completed", waited.text
        code = await asyncio.to_thread(srv.proc.wait, GRACE + 15)
        exited_in = time.monotonic() - signalled
        assert code in (0, -signal.SIGTERM), srv.output()
        assert "Traceback" not in srv.output()
        print(f"{way}: streams ended {drained_in:.2f}s after SIGTERM, exit after {exited_in:.2f}s")

    srv.start()
    async with httpx.AsyncClient(base_url=srv.url, timeout=15) as c:
        page = (await c.get("/topics/t/events?after=0", headers={"accept": "application/json"})).json()
        assert [e["event"] for e in page["events"]] == ["log", "big"]
        assert (await c.get(f"/runs/{quick_id}")).json()["status"] == "completed"
        rest = await read_sse(c, f"/runs/{quick_id}/events", headers={"last-event-id": str(run_got.events[-1].id)})
        assert rest.ended and rest.events[-1].event == "done"
        assert rest.events[0].id == str(int(run_got.events[-1].id) + 1)  # nothing repeated
        if stuck_id is not None:
            run = (await c.get(f"/runs/{stuck_id}")).json()
            assert run["status"] == "failed"
            assert run["error"] == {"message": "the server stopped before the run finished"}
        if way == "mounted in FastAPI":
            assert (await c.get(f"http://127.0.0.1:{srv.port}/hello")).json() == {"hello": "world"}
