"""The Vercel AI SDK's UI message stream (``ai`` 7.x: `useChat`, `readUIMessageStream`).

Each frame is ``data: <one UI message chunk as JSON>`` and the stream ends with
``data: [DONE]``; the response needs the header ``x-vercel-ai-ui-message-stream: v1``
(`UI_MESSAGE_STREAM_HEADERS`). The run is one assistant message:

    ssehub event                     chunks
    (the first event)                start {messageId}
    step_start / step_end            start-step / finish-step
    text_delta                       text-start {id} (when no text part is open), text-delta {id, delta}
    reasoning_delta                  reasoning-start, reasoning-delta
    tool_call_delta                  tool-input-start {toolCallId, toolName} (first fragment),
                                     tool-input-delta {inputTextDelta}; when the call is complete,
                                     tool-input-available {input} (or tool-input-error: not JSON)
    tool_start (no model call)       tool-input-start, tool-input-available {input: args}
    tool_result                      tool-output-available {output} / tool-output-error {errorText}
    progress                         data-progress {id: "progress", data}: one part, updated in place
    message, any other name          data-<name> {data}
    reset                            data-reset {data: {first_id, requested_after}}
    done                             data-result {data: result, transient} (if any), finish, [DONE]
    error                            error {errorText}, finish {finishReason: "error"}, [DONE]
    cancelled                        abort {reason}, [DONE]
    (parts still open at the end)    text-end, reasoning-end, finish-step, before the end chunks

Tool parts are static (``tool-<name>``), as `streamText` writes them for server-side tools.
The result goes in a transient data part (the `onData` callback) rather than into the
message, which `useChat` sends back with every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .agent import AgentEncoder
from .encoder import Cursor

__all__ = ["UI_MESSAGE_STREAM_HEADERS", "AiSdkEncoder"]

#: What `DefaultChatTransport` expects of the response, beyond the SSE headers.
UI_MESSAGE_STREAM_HEADERS: Mapping[str, str] = {"x-vercel-ai-ui-message-stream": "v1"}


class AiSdkEncoder(AgentEncoder):
    name = "ai-sdk"
    headers = UI_MESSAGE_STREAM_HEADERS

    def __init__(self, *, message_id: str | None = None, after: Cursor | int = 0) -> None:
        super().__init__(after=after)
        self.message_id = message_id

    def _start(self) -> None:
        self._emit({"type": "start"} if self.message_id is None else {"type": "start", "messageId": self.message_id})

    def _step_start(self, step: str) -> None:
        self._emit({"type": "start-step"})

    def _step_end(self, step: str) -> None:
        self._emit({"type": "finish-step"})

    def _text_start(self, part: str) -> None:
        self._emit({"type": "text-start", "id": part})

    def _text_delta(self, part: str, text: str) -> None:
        self._emit({"type": "text-delta", "id": part}, key=("text", part), field="delta", text=text)

    def _text_end(self, part: str) -> None:
        self._emit({"type": "text-end", "id": part})

    def _reasoning_start(self, part: str) -> None:
        self._emit({"type": "reasoning-start", "id": part})

    def _reasoning_delta(self, part: str, text: str) -> None:
        self._emit({"type": "reasoning-delta", "id": part}, key=("reasoning", part), field="delta", text=text)

    def _reasoning_end(self, part: str) -> None:
        self._emit({"type": "reasoning-end", "id": part})

    def _tool_input_start(self, call: str, tool: str) -> None:
        self._emit({"type": "tool-input-start", "toolCallId": call, "toolName": tool})

    def _tool_input_delta(self, call: str, text: str) -> None:
        self._emit(
            {"type": "tool-input-delta", "toolCallId": call}, key=("tool", call), field="inputTextDelta", text=text
        )

    def _tool_input_end(self, call: str, tool: str, value: Any, error: str | None) -> None:
        if error is None:
            self._emit({"type": "tool-input-available", "toolCallId": call, "toolName": tool, "input": value})
        else:
            self._emit(
                {"type": "tool-input-error", "toolCallId": call, "toolName": tool, "input": value, "errorText": error}
            )

    def _tool_call(self, call: str, tool: str, args: Any) -> None:
        self._tool_input_start(call, tool)
        self._emit({"type": "tool-input-available", "toolCallId": call, "toolName": tool, "input": args})

    def _tool_result(self, call: str, tool: str, event_id: int, result: Any, error: str | None, *, known: bool) -> None:
        if not known:
            self._tool_call(call, tool, None)  # the reader needs the part before its output
        if error is None:
            self._emit({"type": "tool-output-available", "toolCallId": call, "output": result})
        else:
            self._emit({"type": "tool-output-error", "toolCallId": call, "errorText": error})

    def _progress(self, data: Any) -> None:
        self._emit({"type": "data-progress", "id": "progress", "data": data})

    def _data(self, name: str, value: Any) -> None:
        self._emit({"type": f"data-{name}", "data": value})

    def _finish(self, result: Any) -> None:
        if result is not None:
            self._emit({"type": "data-result", "data": result, "transient": True})
        self._emit({"type": "finish", "finishReason": "stop"})
        self._emit("[DONE]")

    def _error(self, message: str) -> None:
        self._emit({"type": "error", "errorText": message})
        self._emit({"type": "finish", "finishReason": "error"})
        self._emit("[DONE]")

    def _abort(self, reason: str | None) -> None:
        self._emit({"type": "abort"} if reason is None else {"type": "abort", "reason": reason})
        self._emit("[DONE]")
