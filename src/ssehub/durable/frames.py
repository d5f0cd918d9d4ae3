"""The protocol's SSE dialect: `event: data` with the bytes, then `event: control` with the position.

It differs from ssehub's own SSE: no `id:` field (the position travels in the control
event), and `data:` without the space after the colon, as the reference server writes it
and the conformance suite compares it; a line that itself starts with a space is written
`data: ` + line, so the one space a reader strips is ours and the line's own survives.
CR, LF and CRLF inside a payload each end a `data:` line, so a payload cannot forge events.
"""

from __future__ import annotations

import json
import re

__all__ = ["control", "data"]

_LINE_END = re.compile(r"\r\n|\r|\n")


def data(payload: str) -> bytes:
    """An `event: data` frame: text (JSON arrays included) as is, binary already as base64."""
    lines = [f"data: {line}" if line.startswith(" ") else f"data:{line}" for line in _LINE_END.split(payload)]
    return ("event: data\n" + "\n".join(lines) + "\n\n").encode("utf-8")


def control(next_offset: str, *, cursor: str | None, up_to_date: bool, closed: bool) -> bytes:
    """An `event: control` frame; the cursor is left out once the stream is closed (no reconnect)."""
    body: dict[str, object] = {"streamNextOffset": next_offset}
    if cursor is not None and not closed:
        body["streamCursor"] = cursor
    if up_to_date or closed:
        body["upToDate"] = True
    if closed:
        body["streamClosed"] = True
    return ("event: control\ndata:" + json.dumps(body, separators=(",", ":")) + "\n\n").encode("ascii")
