"""The wire formats, alone: tables of log events in and frames out, then resume and compaction.

The tables pin each format's translation (h11 style). The properties run over logs of
real runs (tests/agent_logs.py) in every format: a reader cut after any frame, or at any
byte, and resumed with the last id it had, ends with exactly the frames of an uncut reader;
a compacted read is the uncut read with adjacent deltas merged; pages and live events give
the same frames as one read. test_formats_node.py has the real `ai` and `@ag-ui` packages
judge the same streams.
"""

from __future__ import annotations

import ast
import itertools
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent_logs import Log, agent_logs
from ssehub import Event, InvalidCursor, InvalidInput, formats, sse
from ssehub.formats import Cursor, Encoder
from ssehub.tail import encode_event as tail_encode_event

FORMATS = formats.FORMATS
RUN = "r1"


class Raw(str):
    """Event data stored as this text, not as JSON."""


def log(*items: tuple[str, Any]) -> list[Event]:
    """Events with ids 1, 2, ...: (name, data as JSON, or Raw text)."""
    return [
        Event(i, name, data if isinstance(data, Raw) else json.dumps(data, separators=(",", ":"), ensure_ascii=False))
        for i, (name, data) in enumerate(items, 1)
    ]


def frames(raw: bytes) -> list[tuple[str, Any]]:
    """(id, data) of each frame; data as JSON when it is JSON; ("event", data) for a named event."""
    out: list[tuple[str, Any]] = []
    for e in sse.Decoder().feed(raw):
        try:
            data: Any = json.loads(e.data)
        except ValueError:
            data = e.data
        out.append((e.id, data if e.event == "message" else {e.event: data}))
    return out


def encoder(name: str, after: Cursor | int = 0) -> Encoder:
    return formats.create(name, run_id=RUN, after=after)


def read(name: str, events: Sequence[Event], *, status: str | None = None, compact: bool = False) -> bytes:
    enc = encoder(name)
    return enc.encode(events, compact=compact) + (enc.close(status) if status else b"")


# -- ai-sdk -------------------------------------------------------------------------------------------------

START = {"type": "start", "messageId": RUN}
DONE = "[DONE]"


def finish(reason: str = "stop") -> dict[str, Any]:
    return {"type": "finish", "finishReason": reason}


def text(kind: str, part: str, delta: str | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"type": f"{kind}", "id": part}
    if delta is not None:
        chunk["delta"] = delta
    return chunk


AI_SDK_CASES = [
    pytest.param(
        log(("text_delta", {"content": "Hel"}), ("text_delta", {"content": "lo"}), ("done", {"result": "Hello"})),
        None,
        [
            ("0.1", START),
            ("0.2", text("text-start", "text-1")),
            ("1", text("text-delta", "text-1", "Hel")),
            ("2", text("text-delta", "text-1", "lo")),
            ("2.1", text("text-end", "text-1")),
            ("2.2", {"type": "data-result", "data": "Hello", "transient": True}),
            ("2.3", finish()),
            ("3", DONE),
        ],
        id="text-then-done",
    ),
    pytest.param(
        log(
            ("reasoning_delta", {"content": "hmm"}),
            ("text_delta", {"content": "A"}),
            ("reasoning_delta", {"content": "again"}),
            ("done", {"result": None}),
        ),
        None,
        [
            ("0.1", START),
            ("0.2", text("reasoning-start", "reasoning-1")),
            ("1", text("reasoning-delta", "reasoning-1", "hmm")),
            ("1.1", text("reasoning-end", "reasoning-1")),
            ("1.2", text("text-start", "text-2")),
            ("2", text("text-delta", "text-2", "A")),
            ("2.1", text("text-end", "text-2")),
            ("2.2", text("reasoning-start", "reasoning-3")),
            ("3", text("reasoning-delta", "reasoning-3", "again")),
            ("3.1", text("reasoning-end", "reasoning-3")),
            ("3.2", finish()),
            ("4", DONE),
        ],
        id="reasoning-and-text-alternate",
    ),
    pytest.param(
        log(
            ("text_delta", {"content": "Let me look."}),
            ("tool_start", {"call_id": "call_1", "tool": "search", "args": {"q": "x"}}),
            ("tool_result", {"call_id": "call_1", "tool": "search", "result": [1]}),
            ("tool_start", {"call_id": "call_2", "tool": "fetch", "args": None}),
            ("tool_result", {"call_id": "call_2", "tool": "fetch", "error": "down"}),
        ),
        None,
        [
            ("0.1", START),
            ("0.2", text("text-start", "text-1")),
            ("1", text("text-delta", "text-1", "Let me look.")),
            ("1.1", text("text-end", "text-1")),
            ("1.2", {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "search"}),
            ("2", {"type": "tool-input-available", "toolCallId": "call_1", "toolName": "search", "input": {"q": "x"}}),
            ("3", {"type": "tool-output-available", "toolCallId": "call_1", "output": [1]}),
            ("3.1", {"type": "tool-input-start", "toolCallId": "call_2", "toolName": "fetch"}),
            ("4", {"type": "tool-input-available", "toolCallId": "call_2", "toolName": "fetch", "input": None}),
            ("5", {"type": "tool-output-error", "toolCallId": "call_2", "errorText": "down"}),
        ],
        id="tools-run-by-the-agent",
    ),
    pytest.param(
        log(
            ("tool_call_delta", {"index": 0, "call_id": "c_a", "tool": "weather", "arguments": ""}),
            ("tool_call_delta", {"index": 0, "call_id": "c_a", "tool": "weather", "arguments": '{"city":'}),
            ("tool_call_delta", {"index": 1, "call_id": "", "tool": "clock", "arguments": "{}"}),
            ("tool_call_delta", {"index": 0, "call_id": "c_a", "tool": "weather", "arguments": '"Oslo"}'}),
            ("progress", {"percent": 50}),
            ("tool_start", {"call_id": "call_1", "tool": "clock", "args": {}}),
            ("tool_start", {"call_id": "call_2", "tool": "weather", "args": {"city": "Oslo"}}),
            ("tool_result", {"call_id": "call_2", "tool": "weather", "result": "rain"}),
            ("tool_result", {"call_id": "call_1", "tool": "clock", "result": "noon"}),
        ),
        None,
        [
            ("0.1", START),
            ("1", {"type": "tool-input-start", "toolCallId": "c_a", "toolName": "weather"}),
            ("2", {"type": "tool-input-delta", "toolCallId": "c_a", "inputTextDelta": '{"city":'}),
            ("2.1", {"type": "tool-input-start", "toolCallId": "call-3", "toolName": "clock"}),
            ("3", {"type": "tool-input-delta", "toolCallId": "call-3", "inputTextDelta": "{}"}),
            ("4", {"type": "tool-input-delta", "toolCallId": "c_a", "inputTextDelta": '"Oslo"}'}),
            ("5", {"type": "data-progress", "id": "progress", "data": {"percent": 50}}),
            (
                "5.1",
                {"type": "tool-input-available", "toolCallId": "c_a", "toolName": "weather", "input": {"city": "Oslo"}},
            ),
            ("6", {"type": "tool-input-available", "toolCallId": "call-3", "toolName": "clock", "input": {}}),
            ("8", {"type": "tool-output-available", "toolCallId": "c_a", "output": "rain"}),
            ("9", {"type": "tool-output-available", "toolCallId": "call-3", "output": "noon"}),
        ],
        id="model-tool-calls-answered-by-the-agent",
    ),
    pytest.param(
        log(
            ("tool_call_delta", {"index": 0, "call_id": "c_a", "tool": "f", "arguments": "{not json"}),
            ("tool_call_delta", {"index": 0, "call_id": "c_b", "tool": "g", "arguments": ""}),
            ("step_start", {"step": "s"}),
        ),
        None,
        [
            ("0.1", START),
            ("0.2", {"type": "tool-input-start", "toolCallId": "c_a", "toolName": "f"}),
            ("1", {"type": "tool-input-delta", "toolCallId": "c_a", "inputTextDelta": "{not json"}),
            (
                "1.1",
                {
                    "type": "tool-input-error",
                    "toolCallId": "c_a",
                    "toolName": "f",
                    "input": "{not json",
                    "errorText": "the model's arguments for this tool call are not valid JSON",
                },
            ),
            ("2", {"type": "tool-input-start", "toolCallId": "c_b", "toolName": "g"}),
            ("2.1", {"type": "tool-input-available", "toolCallId": "c_b", "toolName": "g", "input": {}}),
            ("3", {"type": "start-step"}),
        ],
        id="bad-arguments-and-a-new-completion-on-the-same-index",
    ),
    pytest.param(
        log(
            ("step_start", {"step": "outer"}),
            ("text_delta", {"content": "a"}),
            ("step_start", {"step": "outer"}),
            ("step_end", {"step": "outer"}),
            ("step_end", {"step": "nope"}),
            ("step_end", {"step": "outer"}),
            ("step_start", {"step": "last"}),
            ("cancelled", {"reason": "stop pressed"}),
        ),
        None,
        [
            ("0.1", START),
            ("1", {"type": "start-step"}),
            ("1.1", text("text-start", "text-2")),
            ("2", text("text-delta", "text-2", "a")),
            ("3", text("text-end", "text-2")),
            ("6", {"type": "finish-step"}),
            ("7", {"type": "start-step"}),
            ("7.1", {"type": "finish-step"}),
            ("7.2", {"type": "abort", "reason": "stop pressed"}),
            ("8", DONE),
        ],
        id="steps-nest-by-name-and-close-at-the-end",
    ),
    pytest.param(
        log(
            ("text_delta", {"content": "a"}),
            ("message", {"any": "thing"}),
            ("message", Raw("plain text")),
            ("citation", [1, 2]),
            ("text_delta", Raw("not json")),
            ("text_delta", {"content": 5}),
            ("tool_start", {"tool": "no call id"}),
            ("text_delta", {"content": "b"}),
            ("error", {"message": "boom"}),
            ("text_delta", {"content": "after the end"}),
        ),
        None,
        [
            ("0.1", START),
            ("0.2", text("text-start", "text-1")),
            ("1", text("text-delta", "text-1", "a")),
            ("2", {"type": "data-message", "data": {"any": "thing"}}),
            ("3", {"type": "data-message", "data": "plain text"}),
            ("4", {"type": "data-citation", "data": [1, 2]}),
            ("5", {"type": "data-text_delta", "data": "not json"}),
            ("6", {"type": "data-text_delta", "data": {"content": 5}}),
            ("7", {"type": "data-tool_start", "data": {"tool": "no call id"}}),
            ("8", text("text-delta", "text-1", "b")),
            ("8.1", text("text-end", "text-1")),
            ("8.2", {"type": "error", "errorText": "boom"}),
            ("8.3", finish("error")),
            ("9", DONE),
        ],
        id="data-events-misshapen-events-and-nothing-after-the-end",
    ),
    pytest.param(
        log(("tool_result", {"call_id": "x", "tool": "t", "result": 1}), ("text_delta", {"content": "open"})),
        "completed",
        [
            ("0.1", START),
            ("0.2", {"type": "tool-input-start", "toolCallId": "x", "toolName": "t"}),
            ("0.3", {"type": "tool-input-available", "toolCallId": "x", "toolName": "t", "input": None}),
            ("1", {"type": "tool-output-available", "toolCallId": "x", "output": 1}),
            ("1.1", text("text-start", "text-2")),
            ("2", text("text-delta", "text-2", "open")),
            ("2.1", text("text-end", "text-2")),
            ("2.2", finish()),
            ("2.3", DONE),
        ],
        id="unannounced-result-and-closed-without-terminal",
    ),
    pytest.param([], "completed", [("0.1", START), ("0.2", finish()), ("0.3", DONE)], id="empty-topic-closed"),
    pytest.param(
        log(("text_delta", {"content": "a"})),
        "failed",
        [
            ("0.1", START),
            ("0.2", text("text-start", "text-1")),
            ("1", text("text-delta", "text-1", "a")),
            ("1.1", text("text-end", "text-1")),
            ("1.2", {"type": "error", "errorText": "the topic was closed with status failed"}),
            ("1.3", finish("error")),
            ("1.4", DONE),
        ],
        id="closed-failed",
    ),
    pytest.param(
        log(("done", {"result": 1})),
        "completed",
        [
            ("0.1", START),
            ("0.2", {"type": "data-result", "data": 1, "transient": True}),
            ("0.3", finish()),
            ("1", DONE),
        ],
        id="close-after-a-terminal-event-adds-nothing",
    ),
]


@pytest.mark.parametrize(("events", "status", "expected"), AI_SDK_CASES)
def test_ai_sdk(events: list[Event], status: str | None, expected: list[tuple[str, Any]]) -> None:
    assert frames(read("ai-sdk", events, status=status)) == expected


# -- ag-ui ---------------------------------------------------------------------------------------------------


def agui(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


RUN_STARTED = agui("RUN_STARTED", threadId=RUN, runId=RUN, protocolVersion="1.0")
T1 = f"{RUN}-text-1"

AG_UI_CASES = [
    pytest.param(
        log(("text_delta", {"content": "Hel"}), ("text_delta", {"content": "lo"}), ("done", {"result": "Hello"})),
        None,
        [
            ("0.1", RUN_STARTED),
            ("0.2", agui("TEXT_MESSAGE_START", messageId=T1, role="assistant")),
            ("1", agui("TEXT_MESSAGE_CONTENT", messageId=T1, delta="Hel")),
            ("2", agui("TEXT_MESSAGE_CONTENT", messageId=T1, delta="lo")),
            ("2.1", agui("TEXT_MESSAGE_END", messageId=T1)),
            ("3", agui("RUN_FINISHED", threadId=RUN, runId=RUN, result="Hello", outcome={"type": "success"})),
        ],
        id="text-then-done",
    ),
    pytest.param(
        log(
            ("step_start", {"step": "think"}),
            ("reasoning_delta", {"content": "hmm"}),
            ("text_delta", {"content": "Looking."}),
            ("tool_call_delta", {"index": 0, "call_id": "c", "tool": "f", "arguments": "{}"}),
            ("tool_start", {"call_id": "call_1", "tool": "f", "args": {}}),
            ("tool_result", {"call_id": "call_1", "tool": "f", "error": "nope"}),
            ("tool_start", {"call_id": "call_2", "tool": "g", "args": [1]}),
            ("done", {"result": None}),
        ),
        None,
        [
            ("0.1", RUN_STARTED),
            ("1", agui("STEP_STARTED", stepName="think")),
            ("1.1", agui("REASONING_START", messageId=f"{RUN}-reasoning-2")),
            ("1.2", agui("REASONING_MESSAGE_START", messageId=f"{RUN}-reasoning-2", role="reasoning")),
            ("2", agui("REASONING_MESSAGE_CONTENT", messageId=f"{RUN}-reasoning-2", delta="hmm")),
            ("2.1", agui("REASONING_MESSAGE_END", messageId=f"{RUN}-reasoning-2")),
            ("2.2", agui("REASONING_END", messageId=f"{RUN}-reasoning-2")),
            ("2.3", agui("TEXT_MESSAGE_START", messageId=f"{RUN}-text-3", role="assistant")),
            ("3", agui("TEXT_MESSAGE_CONTENT", messageId=f"{RUN}-text-3", delta="Looking.")),
            ("3.1", agui("TEXT_MESSAGE_END", messageId=f"{RUN}-text-3")),
            ("3.2", agui("TOOL_CALL_START", toolCallId=f"{RUN}-c", toolCallName="f", parentMessageId=f"{RUN}-text-3")),
            ("4", agui("TOOL_CALL_ARGS", toolCallId=f"{RUN}-c", delta="{}")),
            ("5", agui("TOOL_CALL_END", toolCallId=f"{RUN}-c")),
            (
                "6",
                agui(
                    "TOOL_CALL_RESULT",
                    messageId=f"{RUN}-result-6",
                    toolCallId=f"{RUN}-c",
                    content='{"error":"nope"}',
                    role="tool",
                ),
            ),
            (
                "6.1",
                agui("TOOL_CALL_START", toolCallId=f"{RUN}-call_2", toolCallName="g", parentMessageId=f"{RUN}-calls-7"),
            ),
            ("6.2", agui("TOOL_CALL_ARGS", toolCallId=f"{RUN}-call_2", delta="[1]")),
            ("7", agui("TOOL_CALL_END", toolCallId=f"{RUN}-call_2")),
            ("7.1", agui("STEP_FINISHED", stepName="think")),
            ("8", agui("RUN_FINISHED", threadId=RUN, runId=RUN, outcome={"type": "success"})),
        ],
        id="a-step-with-reasoning-text-and-tools",
    ),
    pytest.param(
        log(("progress", {"percent": 5}), ("note", Raw("hi")), ("error", Raw("a plain failure"))),
        None,
        [
            ("0.1", RUN_STARTED),
            ("1", agui("CUSTOM", name="progress", value={"percent": 5})),
            ("2", agui("CUSTOM", name="note", value="hi")),
            ("3", agui("RUN_ERROR", message="a plain failure")),
        ],
        id="custom-events-and-error",
    ),
    pytest.param(
        log(("step_start", {"step": "w"}), ("text_delta", {"content": "a"}), ("cancelled", {"reason": "stop"})),
        None,
        [
            ("0.1", RUN_STARTED),
            ("1", agui("STEP_STARTED", stepName="w")),
            ("1.1", agui("TEXT_MESSAGE_START", messageId=f"{RUN}-text-2", role="assistant")),
            ("2", agui("TEXT_MESSAGE_CONTENT", messageId=f"{RUN}-text-2", delta="a")),
            ("2.1", agui("TEXT_MESSAGE_END", messageId=f"{RUN}-text-2")),
            ("2.2", agui("STEP_FINISHED", stepName="w")),
            (
                "3",
                agui(
                    "RUN_FINISHED", threadId=RUN, runId=RUN, outcome={"type": "cancelled"}, metadata={"reason": "stop"}
                ),
            ),
        ],
        id="cancelled-inside-a-step",
    ),
    pytest.param(
        log(("text_delta", {"content": "a"})),
        "cancelled",
        [
            ("0.1", RUN_STARTED),
            ("0.2", agui("TEXT_MESSAGE_START", messageId=T1, role="assistant")),
            ("1", agui("TEXT_MESSAGE_CONTENT", messageId=T1, delta="a")),
            ("1.1", agui("TEXT_MESSAGE_END", messageId=T1)),
            (
                "1.2",
                agui(
                    "RUN_FINISHED",
                    threadId=RUN,
                    runId=RUN,
                    outcome={"type": "cancelled"},
                    metadata={"reason": "the topic was closed with status cancelled"},
                ),
            ),
        ],
        id="closed-cancelled-without-terminal",
    ),
]


@pytest.mark.parametrize(("events", "status", "expected"), AG_UI_CASES)
def test_ag_ui(events: list[Event], status: str | None, expected: list[tuple[str, Any]]) -> None:
    assert frames(read("ag-ui", events, status=status)) == expected


# -- native ------------------------------------------------------------------------------------------------------

NATIVE_EVENTS = log(
    ("message", Raw("hello")),
    ("text_delta", {"content": "a"}),
    ("text_delta", {"content": "b"}),
    ("text_delta", {"content": "c", "extra": 1}),
    ("reasoning_delta", {"content": "r"}),
    ("tool_call_delta", {"index": 0, "call_id": "c", "tool": "t", "arguments": "{"}),
    ("tool_call_delta", {"index": 0, "call_id": "c", "tool": "t", "arguments": "}"}),
    ("tool_call_delta", {"index": 1, "call_id": "d", "tool": "t", "arguments": "[]"}),
    ("done", {"result": 1}),
)


def test_native_frames_are_the_tails() -> None:
    raw = read("native", NATIVE_EVENTS)
    assert raw == b"".join(tail_encode_event(e) for e in NATIVE_EVENTS)
    assert raw == b"".join(formats.encode_event(e) for e in NATIVE_EVENTS)
    assert raw.startswith(b"id: 1\ndata: hello\n\nid: 2\nevent: text_delta\n")
    enc = encoder("native")
    assert enc.close("completed") == b"" and not enc.ended and not enc.stateful


def test_native_compacted() -> None:
    assert frames(read("native", NATIVE_EVENTS, compact=True)) == [
        ("1", "hello"),
        ("3", {"text_delta": {"content": "ab"}}),
        ("4", {"text_delta": {"content": "c", "extra": 1}}),
        ("5", {"reasoning_delta": {"content": "r"}}),
        ("7", {"tool_call_delta": {"index": 0, "call_id": "c", "tool": "t", "arguments": "{}"}}),
        ("8", {"tool_call_delta": {"index": 1, "call_id": "d", "tool": "t", "arguments": "[]"}}),
        ("9", {"done": {"result": 1}}),
    ]


def test_native_reset_is_the_hubs_frame() -> None:
    enc = encoder("native")
    enc.encode(NATIVE_EVENTS[:2])
    assert enc.reset(10, 2) == b'id: 9\nevent: reset\ndata: {"first_id":10,"requested_after":2}\n\n'
    assert enc.last_id == 9


# -- resets, joins, the interface -------------------------------------------------------------------------------


def test_reset_closes_what_is_open_and_starts_afresh() -> None:
    events = log(
        ("step_start", {"step": "s"}),
        ("text_delta", {"content": "a"}),
        ("tool_start", {"call_id": "c1", "tool": "t", "args": 1}),
    )
    enc = encoder("ai-sdk")
    enc.encode(events[:2])
    assert frames(enc.reset(40, 2)) == [
        ("2.1", text("text-end", "text-2")),
        ("2.2", {"type": "finish-step"}),
        ("39", {"type": "data-reset", "data": {"first_id": 40, "requested_after": 2}}),
    ]
    later = [Event(40, "tool_result", '{"call_id":"c1","tool":"t","result":2}'), Event(41, "step_end", '{"step":"s"}')]
    assert frames(enc.encode(later)) == [
        ("39.1", {"type": "tool-input-start", "toolCallId": "c1", "toolName": "t"}),
        ("39.2", {"type": "tool-input-available", "toolCallId": "c1", "toolName": "t", "input": None}),
        ("40", {"type": "tool-output-available", "toolCallId": "c1", "output": 2}),
    ]
    agui_enc = encoder("ag-ui")
    assert frames(agui_enc.reset(5, 0)) == [
        ("0.1", RUN_STARTED),
        ("4", agui("CUSTOM", name="reset", value={"first_id": 5, "requested_after": 0})),
    ]


def test_join_opens_what_is_in_progress() -> None:
    events = log(
        ("step_start", {"step": "s"}),
        ("tool_start", {"call_id": "c1", "tool": "t", "args": {"a": 1}}),
        ("text_delta", {"content": "already sent"}),
    )
    enc = encoder("ai-sdk", after=3)
    assert enc.encode(events) == b""
    # No frame but the last has an id: a reader cut inside the preamble just joins again.
    assert frames(enc.join()) == [
        ("", START),
        ("", {"type": "start-step"}),
        ("", {"type": "tool-input-start", "toolCallId": "c1", "toolName": "t"}),
        ("", {"type": "tool-input-available", "toolCallId": "c1", "toolName": "t", "input": {"a": 1}}),
        ("3", text("text-start", "text-3")),
    ]
    streaming = log(
        ("tool_call_delta", {"index": 0, "call_id": "m", "tool": "u", "arguments": '{"b"'}),
        ("tool_call_delta", {"index": 0, "call_id": "m", "tool": "u", "arguments": ":1"}),
    )
    enc = encoder("ag-ui", after=2)
    assert enc.encode(streaming) == b""
    assert frames(enc.join()) == [
        ("", RUN_STARTED),
        ("", agui("TOOL_CALL_START", toolCallId=f"{RUN}-m", toolCallName="u", parentMessageId=f"{RUN}-calls-1")),
        ("2", agui("TOOL_CALL_ARGS", toolCallId=f"{RUN}-m", delta='{"b":1')),
    ]
    assert frames(enc.encode(log(*[("x", 0)] * 2, ("done", {"result": 1}))))[-1][0] == "3"
    assert encoder("ai-sdk").join() == b"" and encoder("native").join() == b""
    ended = encoder("ai-sdk")
    ended.encode(log(("done", {})))
    assert ended.ended and ended.join() == b""


@pytest.mark.parametrize(
    ("text", "cursor"),
    [("0", Cursor(0)), ("12", Cursor(12)), ("12.3", Cursor(12, 3)), ("007.01", Cursor(7, 1))],
)
def test_cursor_parse(text: str, cursor: Cursor) -> None:
    assert Cursor.parse(text) == cursor
    assert Cursor.parse(str(cursor)) == cursor


@pytest.mark.parametrize("text", ["", "-1", "1.", ".1", "1.2.3", "a", "1a", "\uff11", "1" * 19, "1. 2", " 1"])
def test_cursor_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.parse(text)


def test_cursor_order() -> None:
    assert Cursor(3) < Cursor(3, 1) < Cursor(3, 2) < Cursor(4) < Cursor(4, 1)
    with pytest.raises(InvalidCursor):
        Cursor(-1)


def test_create() -> None:
    assert isinstance(formats.create("native", run_id="x"), formats.NativeEncoder)
    ag = formats.create("ag-ui", run_id="r", thread_id="t")
    assert isinstance(ag, formats.AgUiEncoder) and (ag.thread_id, ag.run_id) == ("t", "r")
    ai = formats.create("ai-sdk", run_id="r", after=Cursor(3, 1))
    assert isinstance(ai, formats.AiSdkEncoder) and ai.message_id == "r"
    assert ai.headers == {"x-vercel-ai-ui-message-stream": "v1"} and ai.compact_default and ai.stateful
    with pytest.raises(InvalidInput, match="format must be one of native, ai-sdk, ag-ui"):
        formats.create("json", run_id="r")


def test_formats_depend_only_on_the_lowest_layers() -> None:
    allowed = {"ssehub.sse", "ssehub.events", "ssehub.exceptions", "ssehub.parsing"}
    package = Path(formats.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ("ssehub.formats" if node.level == 1 else "ssehub") if node.level else ""
                module = ".".join(p for p in (base, node.module) if p)
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("ssehub"):
                    assert name.startswith("ssehub.formats") or name in allowed, (path.name, name)


# -- resume, compaction, pages: properties over the logs of real runs ----------------------------------------------

LOG_NAMES = ("demo", "thinker", "failing", "cancelled", "plain")


@pytest.fixture(scope="session")
def logs() -> dict[str, Log]:
    return agent_logs()


def stream(name: str, lg: Log, *, after: str = "", compact: bool = False, pages: int = 0) -> bytes:
    """What a reader of `lg` gets from `after` on: the encoder is fed the whole log, as a resumed reader's is."""
    enc = formats.create(name, run_id=lg.run_id, after=Cursor.parse(after) if after else 0)
    size = pages or len(lg.events) or 1
    out = b"".join(enc.encode(lg.events[i : i + size], compact=compact) for i in range(0, len(lg.events), size))
    return out + enc.close(lg.status)


def merge_key(name: str, data: Any) -> tuple[str, Any] | None:
    """(the text field, what identifies the part) for a frame compaction may merge, as each format defines it."""
    if not isinstance(data, dict):
        return None
    if name == "native":
        [(event, payload)] = data.items() if len(data) == 1 else [(None, None)]
        if event in ("text_delta", "reasoning_delta") and isinstance(payload, dict) and set(payload) == {"content"}:
            return "content", event
        if event == "tool_call_delta" and set(payload) == {"index", "call_id", "tool", "arguments"}:
            return "arguments", (event, payload["index"], payload["call_id"], payload["tool"])
        return None
    kind = data.get("type")
    if kind in ("text-delta", "reasoning-delta"):
        return "delta", (kind, data["id"])
    if kind == "tool-input-delta":
        return "inputTextDelta", (kind, data["toolCallId"])
    if kind in ("TEXT_MESSAGE_CONTENT", "REASONING_MESSAGE_CONTENT"):
        return "delta", (kind, data["messageId"])
    if kind == "TOOL_CALL_ARGS":
        return "delta", (kind, data["toolCallId"])
    return None


def merged(name: str, decoded: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The oracle of compaction: adjacent frames of one part become one, with the id of the last."""
    out: list[tuple[str, Any]] = []
    keys: list[tuple[str, Any] | None] = []
    for fid, data in decoded:
        key = merge_key(name, data)
        if out and key is not None and keys[-1] == key:
            field, last = key[0], out[-1][1]
            if name == "native":
                [(event, payload)] = last.items()
                data = {event: {**payload, field: payload[field] + data[event][field]}}
            else:
                data = {**last, field: last[field] + data[field]}
            out[-1] = (fid, data)
        else:
            out.append((fid, data))
            keys.append(key)
    return out


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("log_name", LOG_NAMES)
def test_every_frame_has_its_own_increasing_id(logs: dict[str, Log], log_name: str, name: str) -> None:
    lg = logs[log_name]
    for compact in (False, True):
        raw = stream(name, lg, compact=compact)
        blocks = raw.split(b"\n\n")[:-1]
        assert blocks and all(b.startswith(b"id: ") for b in blocks)
        ids = [Cursor.parse(fid) for fid, _ in frames(raw)]
        assert all(a < b for a, b in itertools.pairwise(ids))
        event_ids = {e.id for e in lg.events}
        assert all(c.frames or c.after in event_ids for c in ids)  # a plain id is always a log id
        if lg.events[-1].event in ("done", "error", "cancelled"):
            assert ids[-1] == Cursor(lg.events[-1].id)  # resuming from the end gets nothing more
        assert stream(name, lg, after=str(ids[-1]), compact=compact) == b""


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("log_name", LOG_NAMES)
def test_resume_after_every_frame_sends_exactly_the_rest(logs: dict[str, Log], log_name: str, name: str) -> None:
    lg = logs[log_name]
    whole = frames(stream(name, lg))
    for i in range(len(whole) + 1):
        after = whole[i - 1][0] if i else ""
        assert frames(stream(name, lg, after=after)) == whole[i:], f"resumed after {after!r}"


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("log_name", LOG_NAMES)
def test_cut_at_random_bytes_and_resumed_many_times(logs: dict[str, Log], log_name: str, name: str) -> None:
    lg = logs[log_name]
    whole = frames(stream(name, lg))
    rng = random.Random(f"{log_name}-{name}")
    for _ in range(25):
        got: list[tuple[str, Any]] = []
        decoder = sse.Decoder()
        compact = rng.random() < 0.5
        rest = stream(name, lg, compact=compact)
        for _ in range(rng.randint(1, 4)):
            cut = rng.randint(0, len(rest))
            got += [(e.id, frames(sse.encode(e.data, event=e.event, id=e.id))[0][1]) for e in decoder.feed(rest[:cut])]
            decoder.close()  # the connection drops: the incomplete frame is lost
            compact = rng.random() < 0.5
            rest = stream(name, lg, after=decoder.last_event_id, compact=compact)
        got += frames(rest)
        assert merged(name, got) == merged(name, whole)
        if not compact and all(merge_key(name, d) is None for _, d in whole):
            assert got == whole


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("log_name", LOG_NAMES)
def test_compaction_merges_adjacent_deltas_of_a_part_and_nothing_else(
    logs: dict[str, Log], log_name: str, name: str
) -> None:
    lg = logs[log_name]
    whole = frames(stream(name, lg))
    for i in range(len(whole) + 1):
        after = whole[i - 1][0] if i else ""
        assert frames(stream(name, lg, after=after, compact=True)) == merged(name, whole[i:]), f"after {after!r}"
    for size in (1, 3, 16):
        plain = formats.create(name, run_id=lg.run_id)
        compact = formats.create(name, run_id=lg.run_id)
        for k in range(0, len(lg.events), size):
            page = lg.events[k : k + size]
            assert frames(compact.encode(page, compact=True)) == merged(name, frames(plain.encode(page, compact=False)))


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("log_name", LOG_NAMES)
def test_live_events_and_pages_give_the_frames_of_one_read(logs: dict[str, Log], log_name: str, name: str) -> None:
    lg = logs[log_name]
    whole = stream(name, lg)
    enc = formats.create(name, run_id=lg.run_id)
    assert b"".join(enc.feed(e) for e in lg.events) + enc.close(lg.status) == whole
    assert stream(name, lg, pages=7) == whole
    enc = formats.create(name, run_id=lg.run_id)
    overlapping = [*lg.events[:5], *lg.events[:9], *lg.events]  # re-read pages are ignored, not sent again
    assert enc.encode(overlapping, compact=False) + enc.close(lg.status) == whole
    if name == "native":
        assert whole == b"".join(tail_encode_event(e) for e in lg.events)


def test_compaction_makes_a_long_answer_a_few_frames() -> None:
    events = [Event(i, "text_delta", json.dumps({"content": f"w{i} "})) for i in range(1, 10_001)]
    events.append(Event(10_001, "done", '{"result":null}'))
    for name in FORMATS:
        enc = formats.create(name, run_id=RUN)
        raw = b"".join(enc.encode(events[i : i + 1000], compact=True) for i in range(0, len(events), 1000))
        got = frames(raw)
        assert len(got) <= 10 + 8, name  # one text frame per page of 1000, and the opening and closing frames
        text_frames = [d for _, d in got if merge_key(name, d) is not None]
        field = merge_key(name, text_frames[0])
        assert field is not None
        joined = "".join(d["text_delta"]["content"] if name == "native" else d[field[0]] for d in text_frames)
        assert joined == "".join(f"w{i} " for i in range(1, 10_001))


@pytest.mark.parametrize("name", FORMATS)
def test_resume_after_a_reset(logs: dict[str, Log], name: str) -> None:
    """Retention dropped events 11-20 while the reader was at 10; later readers only find 21 on."""
    lg = logs["demo"]
    gone = range(11, 21)
    kept = [e for e in lg.events if e.id not in gone]

    def read_with_reset(after: str = "") -> bytes:
        enc = formats.create(name, run_id=lg.run_id, after=Cursor.parse(after) if after else 0)
        out = enc.encode(kept[:10]) if Cursor.parse(after or "0").after <= 10 else enc.reset(21, 0)
        if enc.last_id == 10:
            out += enc.reset(21, 10)
        return out + enc.encode(kept[10:]) + enc.close(lg.status)

    whole = frames(read_with_reset())
    reset_at = next(i for i, (_, d) in enumerate(whole) if "reset" in json.dumps(d))
    assert whole[reset_at][0] == "20"  # as the native reset frame always had: first_id - 1
    for i in range(reset_at + 1, len(whole) + 1):
        assert frames(read_with_reset(whole[i - 1][0])) == whole[i:]
