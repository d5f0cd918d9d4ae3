"""The demo agent of `ssehub serve --demo`: `POST /agents/chat {"message": "..."}`.

It also takes a conversation, `{"messages": [{"role", "content"}, ...]}` (what `useChat` at
`/chat/chat` and AG-UI clients at `/ag-ui/chat` send it): it answers the last user message.

With no configuration it answers deterministically: a step with a tool call,
progress, then a multi-paragraph reply streamed token by token at a realistic
pace (`SSEHUB_DEMO_DELAY` seconds per token, default 0.03). With
`SSEHUB_OPENAI_BASE_URL` (and `SSEHUB_OPENAI_MODEL`, `SSEHUB_OPENAI_API_KEY`)
it streams the answer of that OpenAI-compatible model instead. Either way the
result is `{"answer": "<the full text>"}`.

A demo run that nobody reads for `abandon` seconds (`ssehub serve --demo-abandon`, default 60; 0:
never) is cancelled, so a closed tab does not keep a model busy. A reload, even on a slow phone,
is back long before that: the page resumes the run where it was. The count is of this process's
readers, so with a store shared by several processes (where a reader may be on another one) runs
are never cancelled this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from typing import TYPE_CHECKING, Any

from .exceptions import InvalidInput
from .llm import ChatModel, stream_chat

if TYPE_CHECKING:
    from .hub import Hub
    from .runs import Run

__all__ = ["answer_for", "register_demo", "tokens"]

log = logging.getLogger("ssehub.demo")

MAX_MESSAGE = 10_000
_TOKEN = re.compile(r"\s*\S+|\s+")


def answer_for(message: str) -> str:
    """The deterministic reply to `message`."""
    quoted = " ".join(message.split())[:200] or "nothing"
    return (
        f"You said: \u201c{quoted}\u201d. I am the ssehub demo agent, and I am streaming this answer to you "
        "token by token over Server-Sent Events.\n\n"
        "Every token is an event with its own id in a durable topic log. Refresh the page or lose the "
        "connection halfway through, and the stream resumes from the last id you saw: nothing is lost and "
        "nothing is shown twice.\n\n"
        "Open this conversation in a second tab and both show the same stream. Press Stop and the run is "
        "cancelled: my task stops at once, and the topic closes with a cancelled event."
    )


def tokens(text: str) -> list[str]:
    """Word-sized pieces that join back into `text` exactly."""
    return _TOKEN.findall(text)


def _validate(body: dict[str, Any]) -> dict[str, Any]:
    history = _history(body.get("messages"))
    message = body.get("message", next((m["content"] for m in reversed(history) if m["role"] == "user"), ""))
    if not isinstance(message, str):
        raise InvalidInput('"message" must be a string')
    if len(message) > MAX_MESSAGE:
        raise InvalidInput(f'"message" is at most {MAX_MESSAGE} characters')
    return {"message": message, "history": history}


def _history(messages: Any) -> list[dict[str, str]]:
    if messages is None:
        return []
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise InvalidInput('"messages" must be a list of {"role", "content"} with string values')
    if sum(len(m["content"]) for m in messages) > 10 * MAX_MESSAGE:
        raise InvalidInput(f'"messages" hold at most {10 * MAX_MESSAGE} characters')
    return [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] in ("user", "assistant")]


async def _cancel_when_abandoned(hub: Hub, run: Run, abandon: float) -> None:
    step = min(1.0, abandon / 4)
    unread = 0.0
    while unread < abandon:
        await asyncio.sleep(step)
        unread = 0.0 if hub.subscribers(run.topic) else unread + step
    log.info("run %s: nobody read it for %gs: cancelling it", run.id, abandon)
    run.cancel(f"nobody read the answer for {abandon:g} seconds")


def register_demo(hub: Hub, name: str = "chat", *, abandon: float = 60.0) -> None:
    raw = os.environ.get("SSEHUB_DEMO_DELAY", "0.03")
    try:
        delay = float(raw)
    except ValueError:
        delay = -1.0
    if not 0 <= delay <= 60:
        raise InvalidInput(f"SSEHUB_DEMO_DELAY must be a number of seconds from 0 to 60, got {raw[:40]!r}")
    model = ChatModel.from_env()
    if abandon and hub.store.shared:
        log.info("demo: runs nobody reads are not cancelled with a shared store (readers may be elsewhere)")
        abandon = 0.0

    @hub.agent(name, timeout=600, validate=_validate)
    async def chat(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        watcher = asyncio.create_task(_cancel_when_abandoned(hub, run, abandon)) if abandon else None
        try:
            return await _answer(run, body)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _answer(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        message = body["message"]
        async with run.step("research"):
            await run.progress(5, "Reading your message")
            async with run.tool("search", {"query": message[:200]}) as call:
                await asyncio.sleep(delay * 5)
                call.result = {"hits": 3, "best": "ssehub: durable, resumable Server-Sent Events"}
        await run.progress(20, "Writing the answer")
        if model is not None:
            system = {"role": "system", "content": "You are a helpful assistant. Answer in a few short paragraphs."}
            conversation = body["history"] or [{"role": "user", "content": message}]
            completion = await stream_chat(model, [system, *conversation])
            await run.progress(100, "Done")
            return {"answer": completion.text}
        text = answer_for(message)
        pieces = tokens(text)
        for i, piece in enumerate(pieces, 1):
            await run.text(piece)
            if i % 20 == 0:
                await run.progress(20 + 80 * i // len(pieces), "Writing the answer")
            await asyncio.sleep(delay)
        await run.progress(100, "Done")
        return {"answer": text}
