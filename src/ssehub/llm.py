"""OpenAI-compatible streaming chat completions, turned into run events.

`POST {base_url}/chat/completions` with `"stream": true` answers SSE whose data
lines are `chat.completion.chunk` objects and a final `[DONE]`; OpenAI, vLLM,
Ollama, llama.cpp's server and most gateways speak it. `stream_chat` reads it
with our own `sse.Decoder` and, through `emit()`, publishes to the current run:

    text_delta       {"content": "tok"}                         a piece of the answer
    reasoning_delta  {"content": "tok"}                         a piece of a reasoning model's thinking
    tool_call_delta  {"index", "call_id", "tool", "arguments"}  a fragment of a tool call the model makes

Reasoning is not in OpenAI's own chat completions, so servers name it as they like:
`reasoning_content` (DeepSeek's API, llama.cpp's server, vLLM before 0.11) or
`reasoning` (Ollama, OpenRouter, vLLM from 0.11, which keeps the old name as an alias).
The first of the two present in a delta is taken, so a delta carrying both is read once.

and returns the whole `Completion` (text, the tool calls as `ssehub.ToolCall`s,
finish reason), so the agent can run the tools (`async with run.tool(call)`, which
keeps the model's call id) and call again.
Outside a run, `emit()` is a no-op and `stream_chat` simply returns the completion.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import sse
from .exceptions import UpstreamError
from .runs import ToolCall, emit

__all__ = ["ChatModel", "Completion", "chat_chunks", "stream_chat"]


@dataclass(frozen=True, slots=True)
class ChatModel:
    """Where to reach a model: `base_url` ends before `/chat/completions`, e.g. `http://localhost:11434/v1`."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0

    @classmethod
    def from_env(cls, prefix: str = "SSEHUB_OPENAI_") -> ChatModel | None:
        """From `SSEHUB_OPENAI_BASE_URL`, `_MODEL` and `_API_KEY`; None when no base URL is set."""
        base_url = os.environ.get(f"{prefix}BASE_URL")
        if not base_url:
            return None
        return cls(base_url, os.environ.get(f"{prefix}MODEL", "gpt-4o-mini"), os.environ.get(f"{prefix}API_KEY"))


@dataclass(slots=True)
class _Fragments:
    """A tool call being streamed: its id and name come first, its JSON arguments in pieces."""

    id: str = ""
    name: str = ""
    arguments: str = ""

    def call(self) -> ToolCall:
        try:
            args = json.loads(self.arguments or "{}")
        except ValueError:
            raise UpstreamError(f"the model's arguments for tool {self.name!r} are not valid JSON") from None
        return ToolCall(self.id, self.name, args)


@dataclass(slots=True)
class Completion:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


async def chat_chunks(
    model: ChatModel,
    messages: Sequence[dict[str, Any]],
    *,
    client: httpx.AsyncClient | None = None,
    **params: Any,
) -> AsyncIterator[dict[str, Any]]:
    """The raw `chat.completion.chunk` objects of one streaming completion, until `[DONE]`."""
    headers = {"accept": "text/event-stream"}
    if model.api_key:
        headers["authorization"] = f"Bearer {model.api_key}"
    body = {"model": model.model, "messages": list(messages), "stream": True, **params}
    url = model.base_url.rstrip("/") + "/chat/completions"
    own = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(model.timeout, connect=10.0))
    try:
        async with http.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                raise UpstreamError(f"the model at {url} answered {response.status_code}: {text}")
            decoder = sse.Decoder()
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    if event.data.strip() == "[DONE]":
                        return
                    try:
                        payload = json.loads(event.data)
                    except ValueError:
                        raise UpstreamError(f"the model sent data that is not JSON: {event.data[:100]!r}") from None
                    if not isinstance(payload, dict):
                        raise UpstreamError("the model sent a chunk that is not a JSON object")
                    if "error" in payload:
                        error = payload["error"]
                        message = error.get("message", error) if isinstance(error, dict) else error
                        raise UpstreamError(f"the model failed: {str(message)[:300]}")
                    yield payload
    except httpx.HTTPError as exc:
        raise UpstreamError(f"the model at {url} could not be reached: {exc}") from None
    finally:
        if own:
            await http.aclose()


async def stream_chat(
    model: ChatModel,
    messages: Sequence[dict[str, Any]],
    *,
    client: httpx.AsyncClient | None = None,
    **params: Any,
) -> Completion:
    """Stream one completion into the current run's events (see the module docstring) and return it.

    Raises UpstreamError when the model fails, or asks for a tool with arguments that are not JSON.
    """
    out = Completion()
    calls: dict[int, _Fragments] = {}
    parts: list[str] = []
    thoughts: list[str] = []
    async for chunk in chat_chunks(model, messages, client=client, **params):
        if isinstance(chunk.get("usage"), dict):
            out.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # only the first choice is streamed
            delta = choice.get("delta") or {}
            thought = _reasoning(delta)
            if thought:
                thoughts.append(thought)
                emit("reasoning_delta", {"content": thought})
            content = delta.get("content")
            if isinstance(content, str) and content:
                parts.append(content)
                emit("text_delta", {"content": content})
            for fragment in delta.get("tool_calls") or []:
                _tool_delta(calls, fragment)
            if choice.get("finish_reason"):
                out.finish_reason = choice["finish_reason"]
    out.text = "".join(parts)
    out.reasoning = "".join(thoughts)
    out.tool_calls = [calls[i].call() for i in sorted(calls)]
    return out


def _reasoning(delta: Any) -> str:
    if not isinstance(delta, dict):
        return ""
    for name in ("reasoning_content", "reasoning"):
        value = delta.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _tool_delta(calls: dict[int, _Fragments], fragment: Any) -> None:
    # The first fragment of a call carries its id and name; later ones only append to the arguments.
    if not isinstance(fragment, dict):
        return
    index = fragment.get("index", 0)
    if not isinstance(index, int):
        return
    call = calls.setdefault(index, _Fragments())
    function = fragment.get("function") or {}
    if fragment.get("id"):
        call.id = str(fragment["id"])
    if function.get("name"):
        call.name += str(function["name"])
    arguments = function.get("arguments") or ""
    call.arguments += str(arguments)
    emit("tool_call_delta", {"index": index, "call_id": call.id, "tool": call.name, "arguments": arguments})
