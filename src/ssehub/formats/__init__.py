"""Wire formats: one topic log read as ssehub's own SSE, as the AI SDK's UI message stream, or as AG-UI.

Each format is a pure, stateful encoder (log events in, SSE bytes out, no I/O) whose frames
all carry an SSE id, so `Last-Event-ID` resumes in every format; `encoder` explains the ids.

    enc = formats.create("ai-sdk", run_id=run_id, after=formats.Cursor.parse(last_event_id))
    enc.encode(page_of_events)      # history and catch-up, compacted by default for ai-sdk / ag-ui
    enc.feed(event)                 # one live event
    enc.reset(first_id, after)      # retention dropped what was asked for
    enc.close(status)               # the topic ended without a terminal event

A subscriber loop reading a topic in a format:

- parse `Last-Event-ID` (else ``?after=``) with `Cursor.parse`; a cursor beyond the topic's
  last id (the topic was made anew) means ``after=0`` and a `reset` first;
- read from the log's first event if `Encoder.stateful` (the encoder rebuilds its state
  and drops everything at or before the cursor), else from ``cursor.after``; a page whose
  first id is past the read position calls for `reset(page.first_id, position)`;
- write what `encode` returns for each page, and for what the tail has after
  `Encoder.last_id` when woken; stop when `Encoder.ended`;
- when the topic has ended and everything was fed, write `close(status)`; a reader for
  which all of this is empty is at the end: answer 204.
"""

from __future__ import annotations

from ..exceptions import InvalidInput
from .ag_ui import AgUiEncoder
from .ai_sdk import UI_MESSAGE_STREAM_HEADERS, AiSdkEncoder
from .encoder import Cursor, Encoder
from .native import NativeEncoder, encode_event

__all__ = [
    "FORMATS",
    "UI_MESSAGE_STREAM_HEADERS",
    "AgUiEncoder",
    "AiSdkEncoder",
    "Cursor",
    "Encoder",
    "NativeEncoder",
    "create",
    "encode_event",
]

FORMATS: tuple[str, ...] = (NativeEncoder.name, AiSdkEncoder.name, AgUiEncoder.name)


def create(format: str, *, run_id: str, thread_id: str | None = None, after: Cursor | int = 0) -> Encoder:
    """An encoder for `format` (a ``?format=`` value), resuming after `after`.

    `run_id` names what is being read (a run id, or a topic): it is the AI SDK message id and
    the AG-UI run id; `thread_id` is the AG-UI thread (the run id when not given).
    """
    if format == NativeEncoder.name:
        return NativeEncoder(after=after)
    if format == AiSdkEncoder.name:
        return AiSdkEncoder(message_id=run_id, after=after)
    if format == AgUiEncoder.name:
        return AgUiEncoder(thread_id=thread_id or run_id, run_id=run_id, after=after)
    raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {format[:40]!r}")
