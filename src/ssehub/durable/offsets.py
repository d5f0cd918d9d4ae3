"""Offsets: opaque strings that sort like the positions they name.

A stream is a topic, and a position in it is the id of the last event before it: offset N
means "everything with id > N", exactly ssehub's `?after=N`. The text is `{id:016d}_{0:016d}`:
fixed width, so string order is id order, and the same shape as the reference server's
offsets, so `0000000000000000_0000000000000000` (the start) means the same on both. The
second field is always zero: ssehub positions are whole events (a fork's sub-offset is
resolved when the fork is created, never handed out).

`-1` (the start) and `now` (the tail) are the protocol's sentinels and are never minted.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from ..exceptions import InvalidInput

__all__ = ["NOW", "START", "encode", "parse"]

START: Final = "-1"
NOW: Final = "now"
_WIDTH = 16
_OFFSET_RE = re.compile(r"([0-9]{16})_([0-9]{16})")


def encode(last_id: int) -> str:
    """The offset after event `last_id` (0: before the first event)."""
    if not 0 <= last_id < 10**_WIDTH:
        raise ValueError(f"event id {last_id} does not fit an offset")
    return f"{last_id:0{_WIDTH}d}_{0:0{_WIDTH}d}"


def parse(value: str) -> int | Literal["now"]:
    """The id an offset stands for (`-1` is 0), or "now"; InvalidInput for anything this server never minted."""
    if value == START:
        return 0
    if value == NOW:
        return NOW
    match = _OFFSET_RE.fullmatch(value)
    if match is None or int(match[2]) != 0:
        raise InvalidInput(f"invalid offset {value[:60]!r}: use -1, now, or a Stream-Next-Offset this server sent")
    return int(match[1])
