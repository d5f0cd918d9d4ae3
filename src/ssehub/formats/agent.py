"""The agent vocabulary as parts of one assistant message: the state machine both agent formats share.

The log of a run is a flat list of events; the AI SDK and AG-UI both want *parts* that
open, grow and close (a text part, a reasoning part, a tool call), inside steps, between a
start and an end. This module reads the vocabulary once and calls one hook per thing that
happens to a part; `ai_sdk` and `ag_ui` turn the hooks into their own chunks.

    text_delta {"content"}                     grows the open text part (opening one first)
    reasoning_delta {"content"}                grows the open reasoning part
    tool_call_delta {"index", "call_id",       grows the model's tool call `index` (its arguments as they
                     "tool", "arguments"}      stream); the calls close at the next event of another kind
    tool_start {"call_id", "tool", "args"}     the agent runs a tool: the model's call it answers (same
                                               call_id, else the first unanswered call with that tool and
                                               those arguments), or a new call
    tool_result {"call_id", "tool",            the call's output, or with "error" its failure
                 "result" | "error"}
    step_start / step_end {"step"}             a step opens / closes (a name already open nests in it)
    progress, message, any other name          data that belongs to no part, open parts stay open
    done {"result"} / error {"message"}        terminal: every open part and step closes, then the end;
      / cancelled {"reason"}                   later events give nothing

A text part closes when anything but text follows except data (progress, message, other
names): a reasoning delta, a tool call, a step boundary, the end. An event whose data does
not have the shape above (say `text_delta` whose data is not `{"content": "..."}`) is data
under its own name, never an error: the log is already written, a reader must not fail on it.
Part ids come from the id of the event that opened the part (``text-41``), so they are the
same however the log is read: live, replayed, compacted or resumed.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..events import Event
from .encoder import Cursor, Encoder

__all__ = ["AgentEncoder"]

_RAW = object()  # data that is not JSON


@dataclass(slots=True)
class _ModelCall:
    id: str
    name: str
    source: str  # the call_id it was opened with, "" if the model had not sent one yet
    args: list[str] = field(default_factory=list)


class AgentEncoder(Encoder):
    """The shared state machine of the agent formats (see the module docstring)."""

    compact_default = True

    def __init__(self, *, after: Cursor | int = 0) -> None:
        super().__init__(after=after)
        self._started = False
        self._ended = False
        self._steps: list[str] = []
        self._text: str | None = None  # the open text part
        self._reasoning: str | None = None  # the open reasoning part
        self._model: dict[int, _ModelCall] = {}  # the model's calls whose arguments are streaming, by index
        self._awaiting: dict[str, tuple[str, Any]] = {}  # calls with their input and no output yet
        self._unanswered: list[str] = []  # the model's calls no tool_start has claimed yet, in order
        self._links: dict[str, str] = {}  # a tool_start's call_id -> the model's call it answers
        #: The assistant turn the next tool call belongs to (AG-UI's parentMessageId): the text just
        #: before it, else the first of the calls made together; a tool result ends the turn.
        self._parent: str | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    # -- reading the log -------------------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        if self._ended:
            return
        self._begin()
        handler = _HANDLERS.get(event.event)
        data = _parse(event.data)
        if handler is None or not handler(self, event, data):
            self._data(event.event, event.data if data is _RAW else data)

    def _begin(self) -> None:
        if not self._started:
            self._started = True
            self._start()

    def _on_text(self, event: Event, data: Any) -> bool:
        content = _field(data, "content", str)
        if content is None:
            return False
        self._close_reasoning()
        self._close_model_calls()
        if self._text is None:
            self._text = self._parent = f"text-{event.id}"
            self._text_start(self._text)
        self._text_delta(self._text, content)
        return True

    def _on_reasoning(self, event: Event, data: Any) -> bool:
        content = _field(data, "content", str)
        if content is None:
            return False
        self._close_text()
        self._close_model_calls()
        if self._reasoning is None:
            self._reasoning = f"reasoning-{event.id}"
            self._reasoning_start(self._reasoning)
        self._reasoning_delta(self._reasoning, content)
        return True

    def _on_tool_call_delta(self, event: Event, data: Any) -> bool:
        index, arguments = _field(data, "index", int), _field(data, "arguments", str)
        if index is None or arguments is None:
            return False
        call_id, tool = _field(data, "call_id", str) or "", _field(data, "tool", str) or ""
        self._close_text()
        self._close_reasoning()
        call = self._model.get(index)
        if call is not None and call_id and call.source and call_id != call.source:
            self._close_model_calls()  # a new completion reusing the index
            call = None
        if call is None:
            call = self._model[index] = _ModelCall(call_id or f"call-{event.id}", tool, call_id)
            self._parent = self._parent or f"calls-{event.id}"
            self._tool_input_start(call.id, call.name)
        call.source = call.source or call_id
        if tool:
            call.name = tool  # the name may arrive in pieces; the last one is the whole
        if arguments:
            call.args.append(arguments)
            self._tool_input_delta(call.id, arguments)
        return True

    def _on_tool_start(self, event: Event, data: Any) -> bool:
        call_id, tool = _field(data, "call_id", str), _field(data, "tool", str)
        if call_id is None or tool is None:
            return False
        args = data.get("args")
        self._close_text()
        self._close_reasoning()
        self._close_model_calls()
        answered = self._answered(call_id, tool, args)
        if answered is not None:
            self._links[call_id] = answered
            return True
        self._awaiting[call_id] = (tool, args)
        self._parent = self._parent or f"calls-{event.id}"
        self._tool_call(call_id, tool, args)
        return True

    def _answered(self, call_id: str, tool: str, args: Any) -> str | None:
        """The model's unanswered call that this tool run answers, if any."""
        if call_id in self._unanswered:
            found: str | None = call_id
        else:
            found = next((c for c in self._unanswered if self._awaiting[c] == (tool, args)), None)
        if found is not None:
            self._unanswered.remove(found)
        return found

    def _on_tool_result(self, event: Event, data: Any) -> bool:
        call_id = _field(data, "call_id", str)
        if call_id is None:
            return False
        self._close_text()
        self._close_reasoning()
        self._close_model_calls()
        part = self._links.pop(call_id, call_id)
        known = part in self._awaiting
        tool = self._awaiting.pop(part, ("", None))[0] or _field(data, "tool", str) or ""
        if part in self._unanswered:
            self._unanswered.remove(part)
        error = data.get("error")
        self._tool_result(
            part, tool, event.id, data.get("result"), None if error is None else _text(error), known=known
        )
        self._parent = None
        return True

    def _on_step_start(self, event: Event, data: Any) -> bool:
        step = _field(data, "step", str)
        if step is None:
            return False
        self._close_parts()
        if step not in self._steps:
            self._step_start(step)
        self._steps.append(step)
        return True

    def _on_step_end(self, event: Event, data: Any) -> bool:
        step = _field(data, "step", str)
        if step is None:
            return False
        self._close_parts()
        if step in self._steps:
            del self._steps[len(self._steps) - 1 - self._steps[::-1].index(step)]
            if step not in self._steps:
                self._step_end(step)
        return True  # a step that is not open (e.g. opened before a reset) closes nothing

    def _on_progress(self, event: Event, data: Any) -> bool:
        self._progress(event.data if data is _RAW else data)
        return True

    def _on_done(self, event: Event, data: Any) -> bool:
        self._end()
        if isinstance(data, dict):
            self._finish(data.get("result"))
        else:
            self._finish(event.data if data is _RAW else data)
        return True

    def _on_error(self, event: Event, data: Any) -> bool:
        message = _field(data, "message", object)
        self._end()
        self._error(_text(message if message is not None else event.data))
        return True

    def _on_cancelled(self, event: Event, data: Any) -> bool:
        self._end()
        self._abort(_field(data, "reason", str))
        return True

    # -- closing ---------------------------------------------------------------------------------------------

    def _close_text(self) -> None:
        if self._text is not None:
            self._text_end(self._text)
            self._text = None

    def _close_reasoning(self) -> None:
        if self._reasoning is not None:
            self._reasoning_end(self._reasoning)
            self._reasoning = None

    def _close_model_calls(self) -> None:
        for call in self._model.values():
            raw = "".join(call.args)
            try:
                value, error = json.loads(raw or "{}"), None
            except ValueError:
                value, error = raw, "the model's arguments for this tool call are not valid JSON"
            self._tool_input_end(call.id, call.name, value, error)
            if error is None:
                self._awaiting[call.id] = (call.name, value)
                self._unanswered.append(call.id)
        self._model.clear()

    def _close_parts(self) -> None:
        self._close_text()
        self._close_reasoning()
        self._close_model_calls()

    def _end(self) -> None:
        self._close_parts()
        for step in reversed(dict.fromkeys(self._steps)):
            self._step_end(step)
        self._steps.clear()
        self._ended = True

    def _reset(self, first_id: int, requested_after: int) -> None:
        if self._ended:
            return
        self._begin()
        self._close_parts()
        for step in reversed(dict.fromkeys(self._steps)):
            self._step_end(step)
        self._steps.clear()
        self._awaiting.clear()
        self._unanswered.clear()
        self._links.clear()
        self._parent = None
        self._data("reset", {"first_id": first_id, "requested_after": requested_after})

    def _close(self, status: str) -> None:
        if self._ended:
            return
        self._begin()
        self._end()
        if status == "completed":
            self._finish(None)
        elif status == "cancelled":
            self._abort("the topic was closed with status cancelled")
        else:
            self._error(f"the topic was closed with status {status}")

    def _join(self) -> None:
        if not self._started or self._ended:
            return  # not begun: the first event brings the start; over: nothing follows
        self._start()
        for step in dict.fromkeys(self._steps):
            self._step_start(step)
        for call_id, (tool, value) in self._awaiting.items():
            self._tool_call(call_id, tool, value)
        if self._reasoning is not None:
            self._reasoning_start(self._reasoning)
        if self._text is not None:
            self._text_start(self._text)
        for call in self._model.values():
            self._tool_input_start(call.id, call.name)
            if call.args:
                self._tool_input_delta(call.id, "".join(call.args))

    # -- the hooks a format implements ---------------------------------------------------------------------------

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _step_start(self, step: str) -> None: ...

    @abstractmethod
    def _step_end(self, step: str) -> None: ...

    @abstractmethod
    def _text_start(self, part: str) -> None: ...

    @abstractmethod
    def _text_delta(self, part: str, text: str) -> None: ...

    @abstractmethod
    def _text_end(self, part: str) -> None: ...

    @abstractmethod
    def _reasoning_start(self, part: str) -> None: ...

    @abstractmethod
    def _reasoning_delta(self, part: str, text: str) -> None: ...

    @abstractmethod
    def _reasoning_end(self, part: str) -> None: ...

    @abstractmethod
    def _tool_input_start(self, call: str, tool: str) -> None:
        """The model begins a tool call whose arguments stream."""

    @abstractmethod
    def _tool_input_delta(self, call: str, text: str) -> None: ...

    @abstractmethod
    def _tool_input_end(self, call: str, tool: str, value: Any, error: str | None) -> None:
        """The model's arguments are complete: `value` parsed, or with `error`, the text that is not JSON."""

    @abstractmethod
    def _tool_call(self, call: str, tool: str, args: Any) -> None:
        """A tool call whose input is known at once (the agent runs a tool the model did not stream)."""

    @abstractmethod
    def _tool_result(self, call: str, tool: str, event_id: int, result: Any, error: str | None, *, known: bool) -> None:
        """The call's output, or its `error`. `known`: the call was announced (else the reader never saw it)."""

    @abstractmethod
    def _progress(self, data: Any) -> None: ...

    @abstractmethod
    def _data(self, name: str, value: Any) -> None:
        """An event that belongs to no part: `message`, an unknown name, a `reset`, a misshapen known event."""

    @abstractmethod
    def _finish(self, result: Any) -> None: ...

    @abstractmethod
    def _error(self, message: str) -> None: ...

    @abstractmethod
    def _abort(self, reason: str | None) -> None: ...


# By event name: a handler returns False when the data does not have the vocabulary's shape.
_HANDLERS: dict[str, Callable[[AgentEncoder, Event, Any], bool]] = {
    "text_delta": AgentEncoder._on_text,
    "reasoning_delta": AgentEncoder._on_reasoning,
    "tool_call_delta": AgentEncoder._on_tool_call_delta,
    "tool_start": AgentEncoder._on_tool_start,
    "tool_result": AgentEncoder._on_tool_result,
    "step_start": AgentEncoder._on_step_start,
    "step_end": AgentEncoder._on_step_end,
    "progress": AgentEncoder._on_progress,
    "done": AgentEncoder._on_done,
    "error": AgentEncoder._on_error,
    "cancelled": AgentEncoder._on_cancelled,
}


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _RAW


def _field(data: Any, name: str, kind: type) -> Any:
    """`data[name]` if `data` is an object and the value is a `kind` (bools are not ints), else None."""
    if not isinstance(data, dict):
        return None
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        return None
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
