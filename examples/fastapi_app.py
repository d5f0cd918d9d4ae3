"""A FastAPI app that mounts ssehub under /api and serves an agent to useChat and AG-UI front ends.

    pip install 'ssehub' fastapi && uvicorn fastapi_app:app --app-dir examples --port 8000

    POST /api/chat/assistant                  useChat: new DefaultChatTransport({ api: "/api/chat/assistant" })
    GET  /api/chat/assistant/{chatId}/stream  its reconnect (useChat's `resume: true`, or `resumeStream()`)
    POST /api/chat/assistant/{chatId}/cancel  what a Stop button calls besides `stop()`, to stop the agent too
    POST /api/ag-ui/assistant                 AG-UI: new HttpAgent({ url: "/api/ag-ui/assistant" })
    GET  /api/runs/{id}/events?format=...     any run as native SSE, ai-sdk or ag-ui, resumable
    GET  /api/...                             the rest of ssehub: topics, runs, /healthz, /metrics
    GET  /                                    a route of the app's own

The agent answers from `EXAMPLE_OPENAI_BASE_URL` (with `EXAMPLE_OPENAI_MODEL`, `EXAMPLE_OPENAI_API_KEY`:
any OpenAI-compatible server, reasoning models included) or, without one, with a canned answer streamed
at `EXAMPLE_DELAY` seconds per word: a little reasoning, a tool call, then the text.
The store is `EXAMPLE_STORE` (default sqlite:///example.db).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI

from ssehub import Hub, Run
from ssehub.asgi import create_app
from ssehub.llm import ChatModel, stream_chat

hub = Hub(os.environ.get("EXAMPLE_STORE", "sqlite:///example.db"))
model = ChatModel.from_env("EXAMPLE_OPENAI_")
delay = float(os.environ.get("EXAMPLE_DELAY", "0.02"))


@hub.agent("assistant", timeout=300)
async def assistant(run: Run, body: dict[str, Any]) -> dict[str, Any]:
    # useChat and AG-UI clients both give `messages` as [{"role", "content"}] (see ssehub.asgi.chat).
    messages = body.get("messages") or [{"role": "user", "content": str(body.get("message", ""))}]
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if model is not None:
        completion = await stream_chat(model, messages)  # text, reasoning and tool calls become run events
        return {"answer": completion.text}
    for thought in ["The user asks ", f"about {question[:60]!r}. ", "A word count first, then the answer."]:
        await run.reasoning(thought)
        await asyncio.sleep(delay)
    async with run.tool("count_words", {"text": question}) as call:
        call.result = {"words": len(question.split())}
    answer = (
        f"Your message has {call.result['words']} words. This answer is streamed word by word from an "
        "ssehub run: every word is an event in a durable log, so a reader that loses its connection "
        "resumes exactly where it was, and a reader that arrives late gets the whole answer in a few frames."
    )
    for i, word in enumerate(answer.split(" ")):
        await run.text(word if i == 0 else " " + word)
        await asyncio.sleep(delay)
    return {"answer": answer}


app = FastAPI(lifespan=hub.lifespan)
app.mount("/api", create_app(hub, manage_hub=False))


@app.get("/")
async def index() -> dict[str, str]:
    return {"chat": "/api/chat/assistant", "ag-ui": "/api/ag-ui/assistant"}
