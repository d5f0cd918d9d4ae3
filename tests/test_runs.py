"""Agent runs over a real socket: the three answers of POST /agents/{name}, resume, cancel, limits, crashes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest

from ssehub import AgentError, Hub, Run, emit
from ssehub.asgi import create_app
from ssehub.demo import answer_for
from ssehub.sse import ServerSentEvent
from support import read_all, serve_app, sse_events

SSE = {"accept": "text/event-stream"}


def make_hub(store: str = "memory://") -> Hub:
    hub = Hub(store)

    @hub.agent("echo")
    async def echo(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        async with run.step("plan", detail=1):
            await run.progress(10, "thinking")
        async with run.tool("lookup", {"q": body.get("q")}) as call:
            call.result = {"found": True}

        async def child() -> None:
            emit("message", {"from": "child"})  # reaches child tasks through the context variable

        async with asyncio.TaskGroup() as tg:
            tg.create_task(child())
        for word in ["Hello", " world"]:
            await run.text(word)
        return {"answer": "Hello world", "q": body.get("q")}

    @hub.agent("boom")
    async def boom(run: Run, body: dict[str, Any]) -> None:
        await run.text("partial")
        if body.get("public"):
            raise AgentError("the quota is used up")
        raise ValueError("secret internal detail")

    return hub


async def test_three_answers_of_an_agent_call(store_url: str) -> None:
    hub = make_hub(store_url)
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        # 1. Plain JSON: wait, then the run document.
        r = await c.post("/agents/echo", json={"q": "x"})
        assert r.status_code == 200
        doc = r.json()
        assert doc["status"] == "completed" and doc["agent"] == "echo"
        assert doc["result"] == {"answer": "Hello world", "q": "x"}
        assert doc["error"] is None
        assert r.headers["location"] == f"/runs/{doc['id']}" and r.headers["x-run-id"] == doc["id"]
        assert doc["events_url"] == f"/runs/{doc['id']}/events"

        # 2. Prefer: respond-async: 202 and where to look.
        r = await c.post("/agents/echo", json={"q": "y"}, headers={"prefer": "respond-async"})
        assert r.status_code == 202
        run_id = r.json()["id"]
        assert r.headers["location"] == f"/runs/{run_id}"
        events = await read_all(c, "GET", f"/runs/{run_id}/events")  # from the start, no cursor given
        assert (await c.get(f"/runs/{run_id}")).json()["status"] == "completed"

        # 3. Accept: text/event-stream: the same events, streamed as the run goes.
        async with c.stream("POST", "/agents/echo", json={"q": "y"}, headers=SSE) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            streamed_id = r.headers["x-run-id"]
            assert r.headers["location"] == f"/runs/{streamed_id}"
            streamed = [e async for e in sse_events(r)]

    for got in (events, streamed):
        assert [e.event for e in got] == [
            "step_start",
            "progress",
            "step_end",
            "tool_start",
            "tool_result",
            "message",
            "text_delta",
            "text_delta",
            "done",
        ]
        assert [int(e.id) for e in got] == list(range(1, 10))
        assert json.loads(got[0].data) == {"step": "plan", "detail": 1}
        assert json.loads(got[1].data) == {"percent": 10, "message": "thinking"}
        assert json.loads(got[3].data) == {"call_id": "call_1", "tool": "lookup", "args": {"q": "y"}}
        assert json.loads(got[4].data) == {"call_id": "call_1", "tool": "lookup", "result": {"found": True}}
        assert json.loads(got[5].data) == {"from": "child"}
        assert "".join(json.loads(e.data)["content"] for e in got if e.event == "text_delta") == "Hello world"
        assert json.loads(got[-1].data) == {"result": {"answer": "Hello world", "q": "y"}}


async def test_finished_run_events_end_with_204_at_the_end() -> None:
    hub = make_hub()
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        run_id = (await c.post("/agents/echo", json={})).json()["id"]
        r = await c.get(f"/runs/{run_id}/events", headers={"last-event-id": "9"})
        assert r.status_code == 204
        tail = await read_all(c, "GET", f"/runs/{run_id}/events?after=7")
        assert [(e.id, e.event) for e in tail] == [("8", "text_delta"), ("9", "done")]


async def test_emit_is_a_noop_outside_a_run() -> None:
    emit("message", {"nobody": "listens"})  # no run, no error


async def test_a_failing_agent_ends_with_a_safe_error(caplog: pytest.LogCaptureFixture) -> None:
    hub = make_hub()
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        with caplog.at_level(logging.ERROR, logger="ssehub.runs"):
            r = await c.post("/agents/boom", json={})
        assert r.status_code == 200
        doc = r.json()
        assert doc["status"] == "failed" and doc["result"] is None
        assert doc["error"] == {"message": "the agent failed"}
        assert "secret internal detail" not in r.text
        assert "secret internal detail" in caplog.text and "Traceback" in caplog.text
        events = await read_all(c, "GET", f"/runs/{doc['id']}/events")
        assert [e.event for e in events] == ["text_delta", "error"]
        assert json.loads(events[-1].data) == {"message": "the agent failed"}

        doc = (await c.post("/agents/boom", json={"public": True})).json()
        assert doc["error"] == {"message": "the quota is used up"}


async def test_disconnect_mid_run_then_resume_with_nothing_lost() -> None:
    hub = Hub("memory://")
    gate = asyncio.Event()
    words = [f"w{i} " for i in range(40)]

    @hub.agent("slow")
    async def slow(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        for i, word in enumerate(words):
            if i == 10:
                await gate.wait()  # the client leaves here
            await run.text(word)
        return {"answer": "".join(words)}

    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        seen: list[ServerSentEvent] = []
        async with c.stream("POST", "/agents/slow", json={}, headers=SSE) as r:
            run_id = r.headers["x-run-id"]
            async for e in sse_events(r):
                seen.append(e)
                if len(seen) == 7:
                    break  # disconnect mid-run
        gate.set()
        # The run carries on without any client.
        for _ in range(200):
            if (await c.get(f"/runs/{run_id}")).json()["status"] != "running":
                break
            await asyncio.sleep(0.02)
        doc = (await c.get(f"/runs/{run_id}")).json()
        assert doc["status"] == "completed"
        rest = await read_all(c, "GET", f"/runs/{run_id}/events", headers={"last-event-id": seen[-1].id})
    ids = [int(e.id) for e in seen + rest]
    assert ids == list(range(1, len(words) + 2))
    text = "".join(json.loads(e.data)["content"] for e in seen + rest if e.event == "text_delta")
    assert text == doc["result"]["answer"] == "".join(words)


async def test_cancel_stops_the_agent_task_promptly() -> None:
    hub = Hub("memory://")
    started = asyncio.Event()
    stopped_at: list[float] = []

    @hub.agent("forever")
    async def forever(run: Run, body: dict[str, Any]) -> None:
        await run.text("working")
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped_at.append(time.monotonic())
            raise

    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        async with c.stream("POST", "/agents/forever", json={}, headers=SSE) as r:
            run_id = r.headers["x-run-id"]
            await started.wait()
            before = time.monotonic()
            cancelled = await c.post(f"/runs/{run_id}/cancel")
            assert stopped_at, "the agent task was not cancelled"
            # 100 ms is the promise; the slack is for a loaded 2-core test machine.
            assert stopped_at[0] - before < 0.1 + 0.15
            assert cancelled.status_code == 202
            assert cancelled.json() == {"id": run_id, "status": "cancelled"}
            events = [e async for e in sse_events(r)]  # the stream ends by itself
        assert [e.event for e in events] == ["text_delta", "cancelled"]
        assert json.loads(events[-1].data) == {"reason": "cancelled by the client"}
        # Idempotent: cancelling an ended run answers its final status.
        again = await c.post(f"/runs/{run_id}/cancel")
        assert again.status_code == 200 and again.json() == {"id": run_id, "status": "cancelled"}
        doc = (await c.get(f"/runs/{run_id}")).json()
        assert doc["status"] == "cancelled"


async def test_timeout_and_max_concurrent() -> None:
    hub = Hub("memory://")
    release = asyncio.Event()

    @hub.agent("sleepy", timeout=0.2)
    async def sleepy(run: Run, body: dict[str, Any]) -> None:
        await asyncio.sleep(3600)

    @hub.agent("single", max_concurrent=1)
    async def single(run: Run, body: dict[str, Any]) -> str:
        await release.wait()
        return "ok"

    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        doc = (await c.post("/agents/sleepy", json={})).json()
        assert doc["status"] == "failed"
        assert doc["error"] == {"message": "the run took longer than 0.2 s"}

        first = await c.post("/agents/single", json={}, headers={"prefer": "respond-async"})
        assert first.status_code == 202
        over = await c.post("/agents/single", json={}, headers={"prefer": "respond-async"})
        assert over.status_code == 429
        assert over.headers["retry-after"] == "1"
        assert over.json()["error"]["code"] == "too_many_requests"
        release.set()
        await read_all(c, "GET", f"/runs/{first.json()['id']}/events")
        for _ in range(100):  # the slot frees once the run's task has ended
            later = await c.post("/agents/single", json={})
            if later.status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert later.json()["result"] == "ok"


async def test_bad_requests_get_precise_errors() -> None:
    hub = make_hub()

    @hub.agent("strict", validate=lambda body: body if isinstance(body.get("n"), int) else _bad())
    async def strict(run: Run, body: dict[str, Any]) -> int:
        return int(body["n"])

    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        cases = [
            (c.post("/agents/echo", content=b"{not json"), 400, "invalid_input"),
            (c.post("/agents/echo", json=[1, 2]), 400, "invalid_input"),
            (c.post("/agents/nope", json={}), 404, "not_found"),
            (c.post("/agents/strict", json={"n": "x"}), 400, "invalid_input"),
            (c.get("/runs/doesnotexist"), 404, "not_found"),
            (c.get("/runs/doesnotexist/events"), 404, "not_found"),
            (c.post("/runs/doesnotexist/cancel"), 404, "not_found"),
            (c.get("/agents/echo"), 405, "method_not_allowed"),
        ]
        for request, status, code in cases:
            r = await request
            assert r.status_code == status, r.text
            assert r.json()["error"]["code"] == code
        run_id = (await c.post("/agents/echo", json={})).json()["id"]
        r = await c.get(f"/runs/{run_id}/events", headers={"last-event-id": "abc"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"
        assert (await c.post("/agents/strict", json={"n": 4})).json()["result"] == 4
        listed = (await c.get("/agents")).json()["agents"]
        assert [a["name"] for a in listed] == ["boom", "echo", "strict"]
        # An ordinary topic is not a run.
        await c.post("/topics/plain/events", json={"data": 1})
        assert (await c.get("/runs/plain")).status_code == 404


def _bad() -> dict[str, Any]:
    from ssehub import InvalidInput

    raise InvalidInput('"n" must be an integer')


async def test_shutdown_fails_running_runs(tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = Hub(store)
    started = asyncio.Event()

    @hub.agent("forever")
    async def forever(run: Run, body: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3600)

    async with hub:
        run = await hub.runs.start_run("forever", {})
        await started.wait()
    async with Hub(store) as again:
        info = await again.runs.info(run.id)
        assert info.status == "failed"
        assert info.meta["error"] == "the server stopped before the run finished"


async def test_a_run_whose_process_died_is_marked_failed(server: Any, tmp_path: Any) -> None:
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    srv = server("--demo", "--store", db, env={"SSEHUB_DEMO_DELAY": "0.05"})
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
        r = await c.post("/agents/chat", json={"message": "crash"}, headers={"prefer": "respond-async"})
        run_id = r.json()["id"]
        seen = []
        async with c.stream("GET", f"/runs/{run_id}/events") as stream:
            async for e in sse_events(stream):
                seen.append(e)
                if e.event == "text_delta":
                    break
        srv.kill()  # SIGKILL: no shutdown, the run is left "running" in the store
        srv.start()
        doc = (await c.get(f"/runs/{run_id}")).json()
        assert doc["status"] == "failed"
        assert "stopped before it finished" in doc["error"]["message"]
        # Its event stream ends too, with the error, instead of waiting forever.
        events = await read_all(c, "GET", f"/runs/{run_id}/events", headers={"last-event-id": seen[-1].id})
        assert events[-1].event == "error"


async def test_demo_agent_streams_a_deterministic_answer(server: Any) -> None:
    srv = server("--demo", "--store", "memory://", env={"SSEHUB_DEMO_DELAY": "0.001"})
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
        events = await read_all(c, "POST", "/agents/chat", json={"message": "Hi there"}, headers=SSE)
        names = [e.event for e in events]
        assert names[:5] == ["step_start", "progress", "tool_start", "tool_result", "step_end"]
        assert "progress" in names[5:] and names[-1] == "done"
        text = "".join(json.loads(e.data)["content"] for e in events if e.event == "text_delta")
        assert text == answer_for("Hi there") == json.loads(events[-1].data)["result"]["answer"]
        assert text.count("\n\n") >= 2 and names.count("text_delta") > 50
        bad = await c.post("/agents/chat", json={"message": ["not", "text"]})
        assert bad.status_code == 400


async def test_cancel_right_after_start_still_ends_the_run() -> None:
    hub = make_hub()
    async with hub:
        run = await hub.runs.start_run("echo", {})
        assert run.cancel()  # before the run's task has had a single step
        await asyncio.wait_for(asyncio.shield(run.finished), 5)
        info = await hub.runs.info(run.id)
        assert info.status == "cancelled" and run.status == "cancelled"
        page = await hub.store.read(run.topic, 0, 10)
        assert page is not None and [e.event for e in page.events] == ["cancelled"]


async def test_closing_the_run_topic_elsewhere_stops_the_agent() -> None:
    hub = Hub("memory://")
    stopped = asyncio.Event()

    @hub.agent("chatty")
    async def chatty(run: Run, body: dict[str, Any]) -> None:
        try:
            while True:
                await run.text("tok ")
                emit("message", {"also": "queued"})
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            stopped.set()
            raise

    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        run_id = (await c.post("/agents/chatty", json={}, headers={"prefer": "respond-async"})).json()["id"]
        await asyncio.sleep(0.1)
        # As another process would: end the topic directly (the owner only learns it from the store).
        closed = await c.post(f"/topics/runs/{run_id}/close", json={"status": "cancelled"})
        assert closed.status_code == 200
        await asyncio.wait_for(stopped.wait(), 5)
        for _ in range(100):
            if run_id not in hub.runs.runs:
                break
            await asyncio.sleep(0.02)
        assert run_id not in hub.runs.runs
        assert (await c.get(f"/runs/{run_id}")).json()["status"] == "cancelled"


def test_demo_delay_must_be_a_number(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "SSEHUB_DEMO_DELAY": "fast"}
    cmd = [sys.executable, "-m", "ssehub", "serve", "--demo", "--store", "memory://", "--port", "1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == "ssehub serve: SSEHUB_DEMO_DELAY must be a number of seconds from 0 to 60, got 'fast'"


async def test_a_result_too_large_to_store_fails_the_run() -> None:
    from ssehub import HubConfig

    hub = Hub("memory://", HubConfig(max_event_bytes=1000))

    @hub.agent("huge")
    async def huge(run: Run, body: dict[str, Any]) -> str:
        return "x" * 5000

    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        doc = (await c.post("/agents/huge", json={})).json()
        assert doc["status"] == "failed"
        assert "above the limit" in doc["error"]["message"]
        events = await read_all(c, "GET", f"/runs/{doc['id']}/events")
        assert [e.event for e in events] == ["error"]


async def test_idempotency_key_on_agent_calls_starts_one_run() -> None:
    hub = make_hub()
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        key = {"idempotency-key": "call-1"}
        first = await c.post("/agents/echo", json={"q": 1}, headers={**key, "prefer": "respond-async"})
        assert first.status_code == 202
        run_id = first.headers["x-run-id"]
        # The same call retried in each form finds the same run; nothing new starts.
        again = await c.post("/agents/echo", json={"q": 1}, headers=key)
        assert again.status_code == 200 and again.json()["id"] == run_id
        assert again.json()["status"] == "completed" and again.json()["result"]["q"] == 1
        events = await read_all(c, "POST", "/agents/echo", json={"q": 1}, headers={**key, **SSE})
        assert events[-1].event == "done" and [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
        late = await c.post("/agents/echo", json={"q": 1}, headers={**key, "prefer": "respond-async"})
        assert late.headers["x-run-id"] == run_id and late.json()["status"] == "completed"
        # Concurrent retries of another call: one run between them.
        key2 = {"idempotency-key": "call-2"}
        answers = await asyncio.gather(*(c.post("/agents/echo", json={"q": 2}, headers=key2) for _ in range(5)))
        assert len({a.json()["id"] for a in answers}) == 1
        assert {a.json()["status"] for a in answers} == {"completed"}
        # The key reused for another call is refused, and starts nothing.
        reused = await c.post("/agents/echo", json={"q": 3}, headers=key)
        assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_conflict"
        runs = (await c.get("/topics?prefix=runs/")).json()["topics"]
        assert len(runs) == 2
        bad = await c.post("/agents/echo", json={}, headers={"idempotency-key": "x" * 201})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
