"""The OpenAI-compatible adapter against a local fake server that streams the /v1/chat/completions format."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ssehub import Hub, Run, UpstreamError
from ssehub.asgi import create_app
from ssehub.llm import ChatModel, stream_chat
from support import read_all, serve_app
from test_runs import SSE

WORDS = ["The ", "answer", " is", " 42", ".\n\n", "Second", " paragraph", "."]


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def text_chunks() -> list[dict[str, Any]]:
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": w}) for w in WORDS]
    out.append(chunk({}, "stop"))
    out.append({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 9}})
    return out


def tool_chunks() -> list[dict[str, Any]]:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    return [
        chunk({"role": "assistant", "content": None}),
        call(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}),
        call(0, function={"arguments": '{"city"'}),
        call(0, function={"arguments": ': "Paris"}'}),
        call(1, id="call_b", type="function", function={"name": "get_time", "arguments": '{"tz": '}),
        call(1, function={"arguments": '"CET"}'}),
        chunk({}, "tool_calls"),
    ]


def reasoning_chunks() -> list[dict[str, Any]]:
    # The names servers use: DeepSeek and llama.cpp `reasoning_content`, Ollama and vLLM 0.11+ `reasoning`;
    # a delta that carries both (a server sending the old name as an alias) is one piece, not two.
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "First, "}),
        chunk({"reasoning": "the question; "}),
        chunk({"reasoning": "then ", "reasoning_content": "then "}),
        chunk({"reasoning": None, "content": "The answer"}),
        chunk({"content": " is 42."}),
        chunk({}, "stop"),
    ]


def fake_openai() -> Starlette:
    async def completions(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer sk-test":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        body = await request.json()
        assert body["stream"] is True and body["messages"]
        model = body["model"]
        if model == "down":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        chunks: list[Any] = {"tools": tool_chunks, "thinker": reasoning_chunks}.get(model, text_chunks)()
        if model == "error-chunk":
            chunks = [*chunks[:3], {"error": {"message": "context length exceeded"}}]

        async def body_bytes() -> AsyncIterator[bytes]:
            wire = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks) + b"data: [DONE]\n\n"
            for i in range(0, len(wire), 37):  # odd pieces: frames split anywhere, as on a real network
                yield wire[i : i + 37]

        return StreamingResponse(body_bytes(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


def model(url: str, name: str = "fake") -> ChatModel:
    return ChatModel(f"{url}/v1", name, "sk-test")


async def test_text_outside_a_run_returns_the_completion() -> None:
    async with serve_app(fake_openai()) as url:
        out = await stream_chat(model(url), [{"role": "user", "content": "hi"}])
    assert out.text == "".join(WORDS)
    assert out.finish_reason == "stop" and out.tool_calls == []
    assert out.usage == {"total_tokens": 9}


async def test_adapter_streams_text_and_tool_call_deltas_into_a_run() -> None:
    hub = Hub("memory://")

    @hub.agent("assistant")
    async def assistant(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        first = await stream_chat(model(body["url"], "tools"), [{"role": "user", "content": "weather?"}])
        for call in first.tool_calls:
            async with run.tool(call) as t:  # the model's own call id, name and parsed arguments
                t.result = "sunny" if call.tool == "get_weather" else "12:00"
        second = await stream_chat(model(body["url"]), [{"role": "user", "content": "and?"}])
        return {"answer": second.text, "finish": [first.finish_reason, second.finish_reason]}

    async with (
        serve_app(fake_openai()) as fake,
        serve_app(create_app(hub)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as c,
    ):
        events = await read_all(c, "POST", "/agents/assistant", json={"url": fake}, headers=SSE)
    deltas = [json.loads(e.data) for e in events if e.event == "tool_call_delta"]
    assert deltas[0] == {"index": 0, "call_id": "call_a", "tool": "get_weather", "arguments": ""}
    assert "".join(d["arguments"] for d in deltas if d["index"] == 0) == '{"city": "Paris"}'
    assert "".join(d["arguments"] for d in deltas if d["index"] == 1) == '{"tz": "CET"}'
    starts = [json.loads(e.data) for e in events if e.event == "tool_start"]
    assert [(s["call_id"], s["tool"], s["args"]) for s in starts] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"tz": "CET"}),
    ]
    text = [json.loads(e.data)["content"] for e in events if e.event == "text_delta"]
    assert text == WORDS
    assert json.loads(events[-1].data)["result"] == {"answer": "".join(WORDS), "finish": ["tool_calls", "stop"]}
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))


async def test_reasoning_deltas_become_reasoning_events() -> None:
    hub = Hub("memory://")

    @hub.agent("thinker")
    async def thinker(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        out = await stream_chat(model(body["url"], "thinker"), [{"role": "user", "content": "why?"}])
        return {"reasoning": out.reasoning, "text": out.text}

    async with (
        serve_app(fake_openai()) as fake,
        serve_app(create_app(hub)) as url,
        httpx.AsyncClient(base_url=url) as c,
    ):
        events = await read_all(c, "POST", "/agents/thinker", json={"url": fake}, headers=SSE)
    assert [(e.event, json.loads(e.data).get("content")) for e in events[:-1]] == [
        ("reasoning_delta", "First, "),
        ("reasoning_delta", "the question; "),
        ("reasoning_delta", "then "),
        ("text_delta", "The answer"),
        ("text_delta", " is 42."),
    ]
    assert json.loads(events[-1].data)["result"] == {
        "reasoning": "First, the question; then ",
        "text": "The answer is 42.",
    }


@pytest.mark.parametrize(
    ("name", "key", "message"),
    [
        ("down", "sk-test", "answered 503"),
        ("fake", "wrong", "answered 401"),
        ("error-chunk", "sk-test", "the model failed: context length exceeded"),
    ],
)
async def test_upstream_failures_raise_upstream_error(name: str, key: str, message: str) -> None:
    async with serve_app(fake_openai()) as url:
        with pytest.raises(UpstreamError, match=message):
            await stream_chat(ChatModel(f"{url}/v1", name, key), [{"role": "user", "content": "hi"}])


async def test_unreachable_model() -> None:
    from support import free_port

    with pytest.raises(UpstreamError, match="could not be reached"):
        await stream_chat(ChatModel(f"http://127.0.0.1:{free_port()}/v1", "x"), [{"role": "user", "content": "hi"}])


async def test_demo_agent_streams_from_an_openai_compatible_model(server: Any) -> None:
    async with serve_app(fake_openai()) as fake:
        env = {
            "SSEHUB_OPENAI_BASE_URL": f"{fake}/v1",
            "SSEHUB_OPENAI_MODEL": "fake",
            "SSEHUB_OPENAI_API_KEY": "sk-test",
        }
        # Started from a thread: the fake model runs on this loop and must keep answering meanwhile.
        srv = await asyncio.to_thread(server, "--demo", "--store", "memory://", env=env)
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
            events = await read_all(c, "POST", "/agents/chat", json={"message": "hi"}, headers=SSE)
    text = "".join(json.loads(e.data)["content"] for e in events if e.event == "text_delta")
    assert text == "".join(WORDS)
    assert events[-1].event == "done" and json.loads(events[-1].data)["result"] == {"answer": text}
