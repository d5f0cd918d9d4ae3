"""ssehub's own SSE: each log event as it is stored, with its log id.

    id: 42
    event: text_delta          (no `event:` line for "message": what EventSource calls message)
    data: {"content":"tok"}

One frame per event, so every id is a plain log id; a `reset` is the frame the hub has
always sent (``event: reset``, id = first_id - 1). Any event name passes through, known
or not. With compaction (opt-in for this format), adjacent `text_delta` and
`reasoning_delta` events become one event of the same name whose content is theirs joined,
and adjacent `tool_call_delta` events of one call one with their arguments joined; an event
whose data is not exactly that shape is never merged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .. import sse
from ..events import Event
from .encoder import Encoder

__all__ = ["NativeEncoder", "encode_event"]

_DELTAS = frozenset({"text_delta", "reasoning_delta", "tool_call_delta"})


def encode_event(event: Event) -> bytes:
    """One event as a native frame (what the hub's tail caches)."""
    return sse.encode(event.data, event=None if event.event == "message" else event.event, id=event.id)


class NativeEncoder(Encoder):
    name = "native"
    stateful = False

    def encode(self, events: Iterable[Event], *, compact: bool | None = None) -> bytes:
        if compact:
            return super().encode(events, compact=True)
        # The hot path: one frame per event exactly as the tail caches it, nothing parsed.
        fresh = []
        last = self._last_id
        for event in events:
            if event.id > last:  # not a re-read of what was fed already
                fresh.append(event)
                last = event.id
        if not fresh:
            return b""
        self._last_id = last
        if self._threshold is not None:
            cut = self._threshold.after
            fresh = [e for e in fresh if e.id > cut]
            if self._last_id > cut:
                self._threshold = None
        return b"".join(map(encode_event, fresh))

    def _event(self, event: Event) -> None:
        name = None if event.event == "message" else event.event
        key = _merge_key(event) if event.event in _DELTAS else None
        if key is None:
            self._emit(event.data, event=name)
            return
        data, field, text = key[1], key[2], key[3]
        self._emit(data, event=name, key=key[0], field=field, text=text, raw=event.data)

    def _reset(self, first_id: int, requested_after: int) -> None:
        self._emit(
            json.dumps({"first_id": first_id, "requested_after": requested_after}, separators=(",", ":")),
            event="reset",
        )


def _merge_key(event: Event) -> tuple[Any, dict[str, Any], str, str] | None:
    """(merge key, the data without its text, the text field, the text), or None if not mergeable."""
    try:
        data = json.loads(event.data)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if event.event == "tool_call_delta":
        if set(data) != {"index", "call_id", "tool", "arguments"} or not isinstance(data["arguments"], str):
            return None
        rest = {k: data[k] for k in ("index", "call_id", "tool")}
        return (event.event, json.dumps(rest, sort_keys=True)), rest, "arguments", data["arguments"]
    if set(data) != {"content"} or not isinstance(data["content"], str):
        return None
    return (event.event,), {}, "content", data["content"]
