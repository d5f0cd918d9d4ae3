"""AG-UI events (``@ag-ui/core`` 1.x), one per frame as ``data: <event as JSON>``.

    ssehub event                     AG-UI events
    (the first event)                RUN_STARTED {threadId, runId, protocolVersion: "1.0"}
    step_start / step_end            STEP_STARTED / STEP_FINISHED {stepName}
    text_delta                       TEXT_MESSAGE_START {messageId, role: "assistant"} (when no text is open),
                                     TEXT_MESSAGE_CONTENT {delta}
    reasoning_delta                  REASONING_START and REASONING_MESSAGE_START {role: "reasoning"},
                                     REASONING_MESSAGE_CONTENT {delta}
    tool_call_delta                  TOOL_CALL_START {toolCallId, toolCallName, parentMessageId} (first
                                     fragment), TOOL_CALL_ARGS {delta}; TOOL_CALL_END when complete
    tool_start (no model call)       TOOL_CALL_START, TOOL_CALL_ARGS {delta: args as JSON}, TOOL_CALL_END
    tool_result                      TOOL_CALL_RESULT {messageId, toolCallId, content: result as JSON,
                                     or {"error": ...} as JSON, role: "tool"}
    progress, message, other names   CUSTOM {name: the event name, value: its data}
    reset                            CUSTOM {name: "reset", value: {first_id, requested_after}}
    done                             RUN_FINISHED {result, outcome: {type: "success"}}
    error                            RUN_ERROR {message}
    cancelled                        RUN_FINISHED {outcome: {type: "cancelled"}, metadata: {reason}}
    (open at the end)                TEXT_MESSAGE_END, REASONING_MESSAGE_END and REASONING_END,
                                     TOOL_CALL_END, STEP_FINISHED, before the end

Message and tool call ids are prefixed with the run id, because AG-UI keys messages by id
across a whole thread of runs. A tool call's parent is the text message just before it
(an assistant message with its text and its tool calls, as chat APIs shape them).
AG-UI itself has no resume; the ids of these frames give it one.
"""

from __future__ import annotations

import json
from typing import Any

from .agent import AgentEncoder
from .encoder import Cursor

__all__ = ["PROTOCOL", "AgUiEncoder"]

#: The AG-UI protocol version these events follow (RUN_STARTED declares it).
PROTOCOL = "1.0"


class AgUiEncoder(AgentEncoder):
    name = "ag-ui"

    def __init__(self, *, thread_id: str, run_id: str, after: Cursor | int = 0) -> None:
        super().__init__(after=after)
        self.thread_id = thread_id
        self.run_id = run_id

    def _id(self, local: str) -> str:
        return f"{self.run_id}-{local}"

    def _start(self) -> None:
        self._emit(
            {"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id, "protocolVersion": PROTOCOL}
        )

    def _step_start(self, step: str) -> None:
        self._emit({"type": "STEP_STARTED", "stepName": step})

    def _step_end(self, step: str) -> None:
        self._emit({"type": "STEP_FINISHED", "stepName": step})

    def _text_start(self, part: str) -> None:
        self._emit({"type": "TEXT_MESSAGE_START", "messageId": self._id(part), "role": "assistant"})

    def _text_delta(self, part: str, text: str) -> None:
        message = self._id(part)
        self._emit(
            {"type": "TEXT_MESSAGE_CONTENT", "messageId": message}, key=("text", message), field="delta", text=text
        )

    def _text_end(self, part: str) -> None:
        self._emit({"type": "TEXT_MESSAGE_END", "messageId": self._id(part)})

    def _reasoning_start(self, part: str) -> None:
        message = self._id(part)
        self._emit({"type": "REASONING_START", "messageId": message})
        self._emit({"type": "REASONING_MESSAGE_START", "messageId": message, "role": "reasoning"})

    def _reasoning_delta(self, part: str, text: str) -> None:
        message = self._id(part)
        self._emit(
            {"type": "REASONING_MESSAGE_CONTENT", "messageId": message},
            key=("reasoning", message),
            field="delta",
            text=text,
        )

    def _reasoning_end(self, part: str) -> None:
        message = self._id(part)
        self._emit({"type": "REASONING_MESSAGE_END", "messageId": message})
        self._emit({"type": "REASONING_END", "messageId": message})

    def _tool_input_start(self, call: str, tool: str) -> None:
        start = {"type": "TOOL_CALL_START", "toolCallId": self._id(call), "toolCallName": tool}
        if self._parent is not None:
            start["parentMessageId"] = self._id(self._parent)
        self._emit(start)

    def _tool_input_delta(self, call: str, text: str) -> None:
        tool_call = self._id(call)
        self._emit(
            {"type": "TOOL_CALL_ARGS", "toolCallId": tool_call}, key=("tool", tool_call), field="delta", text=text
        )

    def _tool_input_end(self, call: str, tool: str, value: Any, error: str | None) -> None:
        self._emit({"type": "TOOL_CALL_END", "toolCallId": self._id(call)})

    def _tool_call(self, call: str, tool: str, args: Any) -> None:
        self._tool_input_start(call, tool)
        self._tool_input_delta(call, _json(args))
        self._tool_input_end(call, tool, args, None)

    def _tool_result(self, call: str, tool: str, event_id: int, result: Any, error: str | None, *, known: bool) -> None:
        self._emit(
            {
                "type": "TOOL_CALL_RESULT",
                "messageId": self._id(f"result-{event_id}"),
                "toolCallId": self._id(call),
                "content": _json(result if error is None else {"error": error}),
                "role": "tool",
            }
        )

    def _progress(self, data: Any) -> None:
        self._data("progress", data)

    def _data(self, name: str, value: Any) -> None:
        self._emit({"type": "CUSTOM", "name": name, "value": value})

    def _finish(self, result: Any) -> None:
        finished: dict[str, Any] = {"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id}
        if result is not None:  # AG-UI has no null result: absent says "none"
            finished["result"] = result
        finished["outcome"] = {"type": "success"}
        self._emit(finished)

    def _error(self, message: str) -> None:
        self._emit({"type": "RUN_ERROR", "message": message})

    def _abort(self, reason: str | None) -> None:
        finished: dict[str, Any] = {
            "type": "RUN_FINISHED",
            "threadId": self.thread_id,
            "runId": self.run_id,
            "outcome": {"type": "cancelled"},
        }
        if reason is not None:
            finished["metadata"] = {"reason": reason}
        self._emit(finished)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
