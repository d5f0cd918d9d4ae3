"""The wire formats over HTTP, against real servers: ?format= on every reading endpoint, useChat and AG-UI input.

Streams are read over real sockets and judged by the real packages (the checkers of
tests/node/formats, see test_formats_node): every ai-sdk chunk must pass `ai`'s schema and
assemble, every AG-UI event its schema and order verifier; readers cut at random bytes and
resumed with Last-Event-ID must end with exactly the message of an uncut reader.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from ssehub import Hub, HubConfig, Run
from ssehub.asgi import create_app
from ssehub.demo import answer_for
from ssehub.sse import Decoder, ServerSentEvent
from support import ServerProcess, eventually, redis_prefix, serve_app
from test_formats_node import assembled, check

SSE = {"accept": "text/event-stream"}
QUESTION = "Which formats?"
AGENT_FORMATS = ("ai-sdk", "ag-ui")


async def read_bytes(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    limit: int | None = None,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
) -> tuple[int, httpx.Headers, bytes]:
    """The status, headers and body of one request; with `limit`, the connection is closed after that many bytes."""
    async with client.stream(method, url, headers={**SSE, **(headers or {})}, json=json) as response:
        if response.status_code != 200:
            return response.status_code, response.headers, await response.aread()
        body = b""
        async for chunk in response.aiter_raw():
            body += chunk
            if limit is not None and len(body) >= limit:
                return 200, response.headers, body[:limit]
        return 200, response.headers, body


def events_of(*bodies: bytes) -> list[ServerSentEvent]:
    """The complete events of successive connections (a frame cut off at the end of one is discarded)."""
    out: list[ServerSentEvent] = []
    decoder = Decoder()
    for body in bodies:
        out += decoder.feed(body)
        decoder.close()
    return out


def text_of(events: list[ServerSentEvent]) -> str:
    return "".join(json.loads(e.data)["content"] for e in events if e.event == "text_delta")


def case(name: str, connections: list[bytes], run_id: str, thread_id: str | None = None) -> dict[str, Any]:
    decoded = [c.decode(errors="ignore") for c in connections]
    return {"name": name, "connections": decoded, "threadId": thread_id or run_id, "runId": run_id}


def demo_server(server: Any, tmp_path: Path, delay: str) -> ServerProcess:
    store = f"sqlite:///{tmp_path / 'hub.db'}"
    return server("--demo", "--store", store, env={"SSEHUB_DEMO_DELAY": delay})  # type: ignore[no-any-return]


# -- the demo agent, in every format ----------------------------------------------------------------------------


async def test_the_demo_agent_in_every_format(server: Any, tmp_path: Path) -> None:
    srv = demo_server(server, tmp_path, "0.005")
    answer = answer_for(QUESTION)
    cases: dict[str, list[dict[str, Any]]] = {name: [] for name in AGENT_FORMATS}
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
        for name in ("native", *AGENT_FORMATS):
            status, headers, live = await read_bytes(
                c, "POST", f"/agents/chat?format={name}", json={"message": QUESTION}
            )
            assert status == 200 and headers["content-type"].startswith("text/event-stream")
            run_id = headers["x-run-id"]
            assert headers["location"] == f"/runs/{run_id}"
            frames = events_of(live)
            assert all(e.id for e in frames)  # every frame can be resumed from
            _, _, replay = await read_bytes(c, "GET", f"/runs/{run_id}/events?format={name}")
            _, _, plain = await read_bytes(c, "GET", f"/runs/{run_id}/events?format={name}&compact=0")
            _, _, by_topic = await read_bytes(c, "GET", f"/topics/runs/{run_id}/events?format={name}&after=0")
            assert by_topic == replay  # the run's topic reads the same as the run
            # Read to the end, in every format: a reconnect gets 204, which stops EventSource.
            status, _, _ = await read_bytes(
                c, "GET", f"/runs/{run_id}/events?format={name}", headers={"last-event-id": frames[-1].id}
            )
            assert status == 204
            if name == "native":
                assert text_of(frames) == text_of(events_of(replay)) == answer
                assert frames[-1].event == "done"
                continue
            if name == "ai-sdk":
                assert headers["x-vercel-ai-ui-message-stream"] == "v1"
                assert live.endswith(b"data: [DONE]\n\n") and replay.endswith(b"data: [DONE]\n\n")
            assert len(events_of(replay)) * 4 < len(events_of(plain))  # compacted by default: a few frames
            for label, body in (("live", live), ("replay", replay), ("plain", plain)):
                cases[name].append(case(label, [body], run_id))
        # Native compaction is asked for: adjacent text deltas merge, the text stays.
        _, _, compact = await read_bytes(c, "GET", f"/runs/{run_id}/events?compact=1")
        assert text_of(events_of(compact)) == answer and len(events_of(compact)) < 30

    sdk = check("ai-sdk", cases["ai-sdk"])
    for result in sdk.values():
        assert result["problems"] == []
        assert assembled(result) == assembled(sdk["live"])
    parts = sdk["live"]["message"]["parts"]
    assert [p["type"] for p in parts] == ["step-start", "data-progress", "tool-search", "text"]
    assert parts[-1] == {"type": "text", "text": answer, "state": "done"}
    ag = check("ag-ui", cases["ag-ui"])
    for result in ag.values():
        assert result["problems"] == []  # the schema, the order verifier and HttpAgent itself
        assert assembled(result) == assembled(ag["live"])
    assert ag["live"]["messages"][-1]["content"] == answer
    assert ag["live"]["outcome"] == "success" and ag["live"]["result"] == {"answer": answer}


# -- readers cut at random bytes ---------------------------------------------------------------------------------


async def cut_reader(client: httpx.AsyncClient, url: str, rng: random.Random) -> list[bytes]:
    """What one reader receives over connections each closed at a random byte, resumed with Last-Event-ID."""
    connections: list[bytes] = []
    decoder = Decoder()
    for limit in [rng.randint(0, 4000) for _ in range(rng.randint(1, 4))] + [None]:
        headers = {"last-event-id": decoder.last_event_id} if decoder.last_event_id else {}
        status, _, body = await read_bytes(client, "GET", url, limit=limit, headers=headers)
        if status == 204:
            break
        assert status == 200, body
        connections.append(body)
        decoder.feed(body)
        decoder.close()
    return connections


async def test_readers_cut_at_random_bytes_end_with_the_uncut_message(server: Any, tmp_path: Path) -> None:
    srv = demo_server(server, tmp_path, "0.01")
    rng = random.Random(15)
    readings = {"native": "", "native-compact": "&compact=1", "ai-sdk": "", "ag-ui": ""}
    async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
        runs: dict[str, str] = {}
        for label in readings:
            r = await c.post("/agents/chat", json={"message": QUESTION}, headers={"prefer": "respond-async"})
            runs[label] = r.json()["id"]

        def url(label: str) -> str:
            return f"/runs/{runs[label]}/events?format={label.removesuffix('-compact')}{readings[label]}"

        # Six readers per format while the run is live (the cuts fall in history and in live frames), and
        # six more once it has ended (replayed, compacted, cut anywhere).
        live = {label: [cut_reader(c, url(label), rng) for _ in range(6)] for label in readings}
        got = {label: await asyncio.gather(*tasks) for label, tasks in live.items()}
        for label in readings:
            got[label] += [await cut_reader(c, url(label), rng) for _ in range(6)]
        uncut = {label: (await read_bytes(c, "GET", url(label)))[2] for label in readings}

    reference = events_of(uncut["native"])
    assert text_of(reference) == answer_for(QUESTION)
    for connections in got["native"]:
        assert events_of(*connections) == reference  # every event once, in order
    for connections in got["native-compact"]:
        merged = events_of(*connections)
        assert text_of(merged) == text_of(reference)
        assert [e.event for e in merged if e.event != "text_delta"] == [
            e.event for e in reference if e.event != "text_delta"
        ]
    cuts = sum(len(cs) - 1 for label in readings for cs in got[label])
    assert cuts > 40  # the readers were really cut, many times
    for name in AGENT_FORMATS:
        run_id = runs[name]
        cases = [case("uncut", [uncut[name]], run_id)]
        cases += [case(f"cut-{i}", connections, run_id) for i, connections in enumerate(got[name])]
        results = check(name, cases)
        for c_ in cases:
            assert results[c_["name"]]["problems"] == [], c_["name"]
            assert assembled(results[c_["name"]]) == assembled(results["uncut"]), c_["name"]


# -- formats on any topic ----------------------------------------------------------------------------------------


def publish(client: httpx.AsyncClient, topic: str, events: list[tuple[str, Any]]) -> Any:
    return client.post(f"/topics/{topic}/events", json=[{"event": e, "data": d} for e, d in events])


async def test_formats_on_a_topic_join_resume_reset_and_refuse(tmp_path: Path) -> None:
    hub = Hub("memory://")
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        topic = "chat/formats"
        words = [f"w{i} " for i in range(8)]
        await publish(c, topic, [("step_start", {"step": "s"})] + [("text_delta", {"content": w}) for w in words[:3]])
        joined = asyncio.create_task(read_bytes(c, "GET", f"/topics/{topic}/events?format=ai-sdk"))  # no cursor
        await eventually(lambda: hub.subscribers(topic) == 1)
        await publish(c, topic, [("text_delta", {"content": w}) for w in words[3:]] + [("progress", {"percent": 9})])
        await c.post(f"/topics/{topic}/close", json={"status": "completed"})
        _, _, join_body = await joined
        _, _, whole = await read_bytes(c, "GET", f"/topics/{topic}/events?format=ai-sdk&after=0")
        _, _, native = await read_bytes(c, "GET", f"/topics/{topic}/events?format=native&compact=1&after=0")

        # A topic closed without a terminal event ends with frames after its last event: L.1, L.2, ...
        ends = [e.id for e in events_of(whole)[-4:]]
        assert ends == ["10.1", "10.2", "10.3", "10.4"]  # text-end, finish-step, finish, [DONE]
        status, _, rest = await read_bytes(c, "GET", f"/topics/{topic}/events?format=ai-sdk&after=10.1")
        assert status == 200 and [e.id for e in events_of(rest)] == ["10.2", "10.3", "10.4"]
        assert (await read_bytes(c, "GET", f"/topics/{topic}/events?format=ai-sdk&after=10.4"))[0] == 204
        status, _, rest = await read_bytes(
            c, "GET", f"/topics/{topic}/events?format=ag-ui", headers={"last-event-id": "10"}
        )
        assert status == 200 and json.loads(events_of(rest)[-1].data)["type"] == "RUN_FINISHED"

        merged = events_of(native)  # step_start, the eight text deltas as one, progress
        assert [e.id for e in merged] == ["1", "9", "10"] and text_of(merged) == "".join(words)

        # Beyond the end (a topic made anew): start over, said aloud.
        _, _, beyond = await read_bytes(c, "GET", f"/topics/{topic}/events?format=ai-sdk&after=99")
        chunks = [json.loads(e.data) for e in events_of(beyond) if e.data != "[DONE]"]
        assert chunks[1] == {"type": "data-reset", "data": {"first_id": 1, "requested_after": 99}}

        for query, code in [
            ("format=xml", "invalid_input"),
            ("format=ai-sdk&compact=2", "invalid_input"),
            ("format=ai-sdk&after=1.x", "invalid_cursor"),
            ("format=ag-ui&after=-1", "invalid_cursor"),
        ]:
            r = await c.get(f"/topics/{topic}/events?{query}", headers=SSE)
            assert r.status_code == 400 and r.json()["error"]["code"] == code, query
        r = await c.get("/runs/nope/events?format=ai-sdk")
        assert r.status_code == 404

    message = "".join(words)
    results = check(
        "ai-sdk",
        [
            case("joined", [join_body], "chat/formats"),
            case("whole", [whole], "chat/formats"),
            case("beyond", [beyond], "x"),
        ],
    )
    for result in results.values():
        assert result["problems"] == []
    text = [p for p in results["whole"]["message"]["parts"] if p["type"] == "text"]
    assert text == [{"type": "text", "text": message, "state": "done"}]
    # The reader that joined in the middle of the text part has its opening, then what came after it.
    joined_text = [p["text"] for p in results["joined"]["message"]["parts"] if p["type"] == "text"]
    assert joined_text == ["".join(words[3:])]


async def test_an_idle_formatted_stream_keeps_alive_and_drains_with_a_retry() -> None:
    hub = Hub("memory://", HubConfig(heartbeat=0.2, retry_ms=1234))
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        await publish(c, "idle", [("text_delta", {"content": "Hi"})])
        body = b""
        async with c.stream("GET", "/topics/idle/events?format=ag-ui&after=0", headers=SSE) as response:
            async for chunk in response.aiter_raw():
                body += chunk
                if body.count(b": keep-alive") == 2:
                    hub.drain()  # SIGTERM: every stream ends with a retry hint, to resume elsewhere
        hint = body.rpartition(b"\nretry: ")[2]  # jittered, from the hint to twice it
        assert b"TEXT_MESSAGE_CONTENT" in body and hint.endswith(b"\n\n") and 1234 <= int(hint) <= 2468
        assert events_of(body)[-1].id == "1"  # where the drained reader resumes


async def test_retention_reset_in_the_agent_formats() -> None:
    hub = Hub("memory://", max_events=5)
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        await publish(c, "old", [("text_delta", {"content": f"{i} "}) for i in range(20)] + [("done", {})])
        _, _, body = await read_bytes(c, "GET", "/topics/old/events?format=ai-sdk&after=0")
    chunks = [json.loads(e.data) for e in events_of(body) if e.data != "[DONE]"]
    assert {"type": "data-reset", "data": {"first_id": 17, "requested_after": 0}} in chunks
    result = check("ai-sdk", [case("reset", [body], "old")])["reset"]
    assert result["problems"] == []
    assert [p["text"] for p in result["message"]["parts"] if p["type"] == "text"] == ["16 17 18 19 "]


# -- useChat and AG-UI input --------------------------------------------------------------------------------------


def echo_hub() -> Hub:
    """A hub whose agent `echo` returns the body it was given."""
    hub = Hub("memory://")

    @hub.agent("echo")
    async def echo(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        await run.reasoning("Echoing.")
        await run.text("ok")
        return body

    return hub


def ui_message(role: str, *texts: str) -> dict[str, Any]:
    return {"id": f"m-{role}", "role": role, "parts": [{"type": "text", "text": t} for t in texts]}


async def test_chat_and_ag_ui_bodies_reach_the_agent_plainly() -> None:
    hub = echo_hub()
    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        messages = [ui_message("user", "Hi", " there"), ui_message("assistant", "Hello"), ui_message("user", "More")]
        request = {"id": "chat-1", "messages": messages, "trigger": "submit-message", "model": "small"}
        status, headers, body = await read_bytes(c, "POST", "/chat/echo", json=request)
        assert status == 200 and headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert body.endswith(b"data: [DONE]\n\n")
        run = (await c.get(headers["location"])).json()
        assert run["result"] == {
            "model": "small",  # the transport's own `body` fields pass through
            "chat_id": "chat-1",
            "trigger": "submit-message",
            "messages": [
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "More"},
            ],
            "raw_messages": messages,
        }
        ag_messages = [
            {"id": "1", "role": "system", "content": "Be brief."},
            {
                "id": "2",
                "role": "user",
                "content": [{"type": "text", "text": "Weather"}, {"type": "binary", "url": "x"}],
            },
            {
                "id": "3",
                "role": "assistant",
                "content": "",
                "toolCalls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"id": "4", "role": "tool", "content": "sunny", "toolCallId": "c1"},
            {"id": "5", "role": "reasoning", "content": "hidden"},
        ]
        run_input = {
            "threadId": "thread-1",
            "runId": "client-run-1",
            "messages": ag_messages,
            "tools": [{"name": "w", "description": "weather", "parameters": {}}],
            "context": [],
            "state": {"n": 1},
            "forwardedProps": {"x": 1},
        }
        status, headers, body = await read_bytes(c, "POST", "/ag-ui/echo", json=run_input)
        assert status == 200 and "x-vercel-ai-ui-message-stream" not in headers
        started = json.loads(events_of(body)[0].data)
        assert started == {
            "type": "RUN_STARTED",
            "threadId": "thread-1",
            "runId": "client-run-1",
            "protocolVersion": "1.0",
        }
        run = (await c.get(headers["location"])).json()
        assert run["result"]["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather"},
            {"role": "assistant", "content": "", "tool_calls": ag_messages[2]["toolCalls"]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        ]
        assert {k: run["result"][k] for k in ("thread_id", "run_id", "state", "forwarded_props")} == {
            "thread_id": "thread-1",
            "run_id": "client-run-1",
            "state": {"n": 1},
            "forwarded_props": {"x": 1},
        }
        # Every reading of that run in ag-ui shows the client's ids, so a resumed reader continues the same run.
        _, _, again = await read_bytes(c, "GET", f"{headers['location']}/events?format=ag-ui")
        assert again == body

        bad: list[tuple[str, Any]] = [
            ("/chat/echo", {"messages": []}),
            ("/chat/echo", {"id": "a/b", "messages": []}),
            ("/chat/echo", {"id": "c", "messages": {}}),
            ("/chat/echo", {"id": "c", "messages": [{"role": "robot", "parts": []}]}),
            ("/chat/echo", {"id": "c", "messages": [], "trigger": "resume-stream"}),
            ("/chat/echo", {"id": "c", "messages": [], "messageId": 7}),
            ("/ag-ui/echo", {"runId": "r", "messages": []}),
            ("/ag-ui/echo", {"threadId": "t", "messages": []}),
            ("/ag-ui/echo", {"threadId": "t", "runId": "r", "messages": [{"content": "no role"}]}),
            ("/ag-ui/echo", {"threadId": "t", "runId": "r", "tools": {}}),
            ("/ag-ui/echo", [1, 2]),
        ]
        for path, payload in bad:
            r = await c.post(path, json=payload)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input", (path, payload)
        r = await c.post("/chat/nobody", json={"id": "c", "messages": []})
        assert r.status_code == 404
        r = await c.post("/chat/echo/nochat/cancel")
        assert r.status_code == 404
        assert (await c.get("/chat/echo/nochat/stream")).status_code == 204
        assert (await c.get("/chat/echo/bad!id/stream")).status_code == 400


@pytest.mark.redis
async def test_a_chat_resumes_and_cancels_across_nodes(server: Any, redis_url: str) -> None:
    with redis_prefix(redis_url) as prefix:
        store, env = f"{redis_url}?prefix={prefix}", {"SSEHUB_DEMO_DELAY": "0.03"}  # about 3 s a run
        node_a, node_b = (server("--demo", "--store", store, env=env).url for _ in range(2))
        async with httpx.AsyncClient(timeout=30) as c:
            request = {"id": "shared", "messages": [ui_message("user", QUESTION)]}
            # Node A starts the run; its reader goes away after a few bytes (a reload, a lost network).
            status, headers, _ = await read_bytes(c, "POST", f"{node_a}/chat/chat", json=request, limit=100)
            run_1 = headers["x-run-id"]
            # Node B finds the chat's run in the store: the reconnect replays it from its start, to the end.
            status, headers, replay = await read_bytes(c, "GET", f"{node_b}/chat/chat/shared/stream")
            assert status == 200 and headers["x-run-id"] == run_1 and replay.endswith(b"data: [DONE]\n\n")
            assert headers["x-vercel-ai-ui-message-stream"] == "v1"
            assert (await c.get(f"{node_b}/chat/chat/shared/stream")).status_code == 204  # over: nothing to resume
            # With Last-Event-ID, the rest after it, from either node, though the run is over.
            cut = events_of(replay)[5].id
            status, _, rest = await read_bytes(
                c, "GET", f"{node_a}/chat/chat/shared/stream", headers={"last-event-id": cut}
            )
            head = replay[: replay.index(b"\n\n", replay.index(f"id: {cut}\n".encode())) + 2]
            assert status == 200 and len(events_of(rest)) < len(events_of(replay)) // 4  # compacted

            # A new message supersedes: the chat's running run (on B) is cancelled when A starts another.
            _, headers, _ = await read_bytes(c, "POST", f"{node_b}/chat/chat", json=request, limit=100)
            run_2 = headers["x-run-id"]
            _, headers, _ = await read_bytes(c, "POST", f"{node_a}/chat/chat", json=request, limit=100)
            run_3 = headers["x-run-id"]
            assert (await c.get(f"{node_a}/runs/{run_2}")).json()["status"] == "cancelled"
            # Stop for real, from B, though A runs it.
            r = await c.post(f"{node_b}/chat/chat/shared/cancel")
            assert r.status_code == 202 and r.json() == {"id": run_3, "status": "cancelled"}
            assert (await c.get(f"{node_a}/runs/{run_3}")).json()["status"] == "cancelled"
            assert (await c.get(f"{node_a}/chat/chat/shared/stream")).status_code == 204
            r = await c.post(f"{node_a}/chat/chat/shared/cancel")  # already over: 200 and its status
            assert r.status_code == 200 and r.json()["status"] == "cancelled"
    results = check("ai-sdk", [case("replay", [replay], run_1), case("rest", [head, rest], run_1)])
    for name in ("replay", "rest"):
        assert results[name]["problems"] == []
        assert assembled(results[name]) == assembled(results["replay"])
    parts = results["replay"]["message"]["parts"]
    assert [p["type"] for p in parts] == ["step-start", "data-progress", "tool-search", "text"]
    assert parts[-1]["text"] == answer_for(QUESTION)
