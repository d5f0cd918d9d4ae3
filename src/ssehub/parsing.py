"""Reading what a client sends, within bounds it cannot stretch: decimal integers and JSON documents.

An integer is 1-20 ASCII digits and within its range: `int()` alone takes `" 1_0 "`, raises on
`"²"` (which `str.isdigit` accepts), and spends quadratic time on a long string of digits.

A JSON document is UTF-8, nested at most `MAX_DEPTH` deep, and holds no string that UTF-8
cannot encode: Python's json module accepts a lone surrogate such as `"\\ud800"`, which no
store can write and no subscriber could read. With `max_items`, a top-level array is parsed
one element at a time and refused at the first element too many, so an 8 MB array of two
million `{}` costs no more than `max_items` of them.

Nothing here knows about HTTP; the callers turn `InvalidInput` into a 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .exceptions import EventTooLarge, InvalidInput

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "loads", "parse_integer"]

#: The deepest nesting of arrays and objects a JSON document may have.
MAX_DEPTH = 100
#: The most digits an integer may have (2**64 has 20), leading zeros included.
MAX_DIGITS = 20

_SPACE = re.compile(r"[ \t\n\r]*")
# Only a \u escape can make a lone surrogate once the body has been decoded as strict UTF-8; an escaped
# backslash before it ("\\ud800" is six characters of text) is a false alarm, which the full check clears.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def parse_integer(
    text: str, name: str, *, maximum: int, minimum: int = 0, error: type[InvalidInput] = InvalidInput
) -> int:
    """`text` as an integer from `minimum` to `maximum`: ASCII digits only, else `error` naming `name`."""
    if 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit():
        value = int(text)
        if minimum <= value <= maximum:
            return value
    raise error(f"{name} must be an integer from {minimum} to {maximum}, got {text[:40]!r}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder()
_STRICT_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def loads(
    body: bytes | str,
    *,
    what: str = "the body",
    max_items: int | None = None,
    too_many: str = "",
    constants: bool = True,
    max_values: int | None = None,
) -> Any:
    """The JSON document `body` (see the module docstring); InvalidInput naming `what` otherwise.

    With `max_items`, a top-level array of more elements is refused with the message `too_many`
    before the rest is parsed. `constants=False` refuses NaN and Infinity, which are not JSON.
    With `max_values`, a document of more values (arrays, objects and scalars) is an EventTooLarge:
    what is handed on as it is must be cheap to move between processes (unpickling 2.7 million
    empty arrays takes a second, most of it the garbage collector's).
    """
    if isinstance(body, bytes):
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"{what} is not valid JSON: it is not UTF-8") from None
    else:
        text = body
    decoder = _DECODER if constants else _STRICT_DECODER
    # Both checks walk what was parsed, so each runs only where a cheap test of the text says it might fail:
    # (value, its depth) for the depth check; the whole document for surrogates.
    deep: list[tuple[Any, int]]
    try:
        start = _skip(text, 0)
        if max_items is not None and text.startswith("[", start):
            value: Any
            value, deep = _bounded_array(decoder, text, start, max_items, too_many or f"{what} has too many items")
        else:
            value = decoder.decode(text)
            deep = [(value, 1)] if _openings(text, 0, len(text)) > MAX_DEPTH else []
    except InvalidInput:
        raise  # too many items (an InvalidInput is a ValueError too)
    except RecursionError:
        raise InvalidInput(f"{what} is nested more than {MAX_DEPTH} deep") from None
    except ValueError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) is not None:
        _check([(value, 1)], what, surrogates=True)
    elif deep:
        _check(deep, what, surrogates=False)
    # Every value but the first of its container follows a comma: that bounds their number from above.
    if max_values is not None and text.count(",") + _openings(text, 0, len(text)) + 1 > max_values:
        _count(value, what, max_values)
    return value


def _count(value: Any, what: str, limit: int) -> None:
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > limit:
            raise EventTooLarge(f"{what} holds more than {limit} JSON values")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _openings(text: str, start: int, end: int) -> int:
    """How many arrays and objects open in text[start:end]: no value there is nested deeper."""
    return text.count("[", start, end) + text.count("{", start, end)


def _skip(text: str, at: int) -> int:
    """Where the JSON whitespace from `at` ends."""
    space = _SPACE.match(text, at)
    return at if space is None else space.end()


def _bounded_array(
    decoder: json.JSONDecoder, text: str, start: int, limit: int, too_many: str
) -> tuple[list[Any], list[tuple[Any, int]]]:
    """The items of the array at `start`, and those that might be nested too deep (at depth 2)."""
    items: list[Any] = []
    deep: list[tuple[Any, int]] = []
    at = _skip(text, start + 1)
    if text.startswith("]", at):
        at += 1
    else:
        while True:
            if len(items) == limit:
                raise InvalidInput(too_many)
            begin = at
            item, at = decoder.raw_decode(text, at)
            items.append(item)
            if _openings(text, begin, at) >= MAX_DEPTH:
                deep.append((item, 2))
            at = _skip(text, at)
            if text.startswith(",", at):
                at = _skip(text, at + 1)
            elif text.startswith("]", at):
                at += 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
    if _skip(text, at) != len(text):
        raise json.JSONDecodeError("Extra data", text, at)
    return items, deep


def _check(roots: list[tuple[Any, int]], what: str, *, surrogates: bool) -> None:
    """Refuse values (each with its depth) nested more than MAX_DEPTH deep, or (`surrogates`) with a string
    UTF-8 cannot encode."""
    stack = list(roots)
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if surrogates and not item.isascii():
                _encodable(item, what)
        elif isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise InvalidInput(f"{what} is nested more than {MAX_DEPTH} deep")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def _encodable(text: str, what: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} holds a lone surrogate (a \\ud800-\\udfff escape without its pair)") from None
