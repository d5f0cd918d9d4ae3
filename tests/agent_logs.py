"""Logs of real runs, for the format tests: each agent runs on a real Hub and its topic is read back.

- `demo`: the demo agent of `ssehub serve --demo` (a step with a tool call, progress, a
  streamed answer, done).
- `thinker`: reasoning in a step, a model's streamed tool calls (`stream_chat` against the
  fake OpenAI server of test_llm), the agent running those tools, a streamed answer,
  `emit()`ed app events, done.
- `failing`: text, then a tool that raises inside a step: the tool's and the step's
  errors, then the run's `error`.
- `cancelled`: text and a step, cancelled while both are open (no step_end: a cancel
  skips the agent's own clean-up of steps).
- `plain`: a topic written by hand and closed without a terminal event, with events that
  do not have the vocabulary's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from ssehub import AgentError, Event, Hub, NewEvent, Run, emit
from ssehub.demo import register_demo
from ssehub.llm import ChatModel, stream_chat
from test_llm import fake_openai


@dataclass(frozen=True)
class Log:
    name: str
    topic: str
    events: tuple[Event, ...]
    status: str  # the topic's final status

    @property
    def run_id(self) -> str:
        return self.topic.removeprefix("runs/")


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _read(hub: Hub, topic: str) -> tuple[tuple[Event, ...], str]:
    events: list[Event] = []
    after = 0
    while True:
        page = await hub.store.read(topic, after, 1000)
        assert page is not None and page.first_id <= after + 1
        if not page.events:
            break
        events.extend(page.events)
        after = page.events[-1].id
    info = await hub.info(topic)
    return tuple(events), info.status


async def _record() -> dict[str, Log]:
    logs: dict[str, Log] = {}
    openai = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake_openai()))
    tools_model = ChatModel("http://openai.test/v1", "tools", api_key="sk-test")
    text_model = ChatModel("http://openai.test/v1", "fake", api_key="sk-test")
    with _environ(SSEHUB_DEMO_DELAY="0", SSEHUB_OPENAI_BASE_URL=""):
        hub = Hub("memory://")
        register_demo(hub)
    cancel_point = asyncio.Event()

    @hub.agent("thinker")
    async def thinker(run: Run, body: dict[str, Any]) -> Any:
        async with run.step("think"):
            for piece in ["The user ", "wants the weather ", "and the time."]:
                await run.reasoning(piece)
        messages = [{"role": "user", "content": body["message"]}]
        completion = await stream_chat(tools_model, messages, client=openai)
        for tool_call in completion.tool_calls:
            async with run.tool(tool_call) as call:  # under the model's own call id
                call.result = {"tool": tool_call.tool, "ok": True}
        await run.progress(50, "Answering")
        emit("message", {"note": "emit() reaches the run from anywhere"})
        emit("citation", {"url": "https://example.com/weather"})
        answer = await stream_chat(text_model, messages, client=openai)
        return {"answer": answer.text}

    @hub.agent("failing")
    async def failing(run: Run, body: dict[str, Any]) -> Any:
        await run.text("Fetching ")
        await run.text("the source.")
        async with run.step("fetch"), run.tool("download", {"url": "https://example.com"}):
            raise AgentError("the source is down")

    @hub.agent("cancelled")
    async def cancelled(run: Run, body: dict[str, Any]) -> Any:
        async with run.step("write"):
            for word in ["A ", "long ", "answer ", "that "]:
                await run.text(word)
            cancel_point.set()
            await asyncio.Event().wait()

    async with hub, openai:
        for agent in ("chat", "thinker", "failing"):
            run = await hub.runs.start_run(agent, {"message": f"What about {agent}?"})
            await hub.runs.wait(run)
            logs[agent if agent != "chat" else "demo"] = Log(
                agent if agent != "chat" else "demo", run.topic, *await _read(hub, run.topic)
            )
        run = await hub.runs.start_run("cancelled", {})
        await cancel_point.wait()
        await hub.runs.cancel(run.id)
        logs["cancelled"] = Log("cancelled", run.topic, *await _read(hub, run.topic))

        topic = "chat/plain"
        await hub.publish_many(
            topic,
            [
                NewEvent.from_json("step_start", {"step": "intro", "depth": 1}),
                NewEvent("message", "a text/plain message"),
                NewEvent.from_json("text_delta", {"content": "Hello "}),
                NewEvent.from_json("progress", {"percent": 10}),
                NewEvent.from_json("text_delta", {"content": "world."}),
                NewEvent("text_delta", "not JSON, so not a text delta"),
                NewEvent.from_json("tool_result", {"call_id": "orphan", "tool": "lookup", "result": [1, 2]}),
                NewEvent.from_json("step_end", {"step": "never-started"}),
                NewEvent.from_json("text_delta", {"content": "Still open when the topic closes."}),
            ],
        )
        await hub.close_topic(topic, "completed")
        logs["plain"] = Log("plain", topic, *await _read(hub, topic))
    return logs


@functools.cache
def agent_logs() -> dict[str, Log]:
    """Recorded once per test session (in a loop of its own: call it outside a running loop)."""
    return asyncio.run(_record())
