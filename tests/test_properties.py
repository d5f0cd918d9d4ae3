"""Properties of the pure input and wire-format code, over generated input (hypothesis).

- `ssehub.parsing.parse_integer`: exactly the ASCII-digit strings within range parse, to their value;
  anything else is an InvalidInput, never another error.
- `ssehub.parsing.loads`: a JSON document comes back as itself; a top-level array is refused exactly when
  it has more than `max_items`; arbitrary bytes are a document or an InvalidInput, never another error.
- `ssehub.sse`: what `encode` writes, `Decoder` reads back, however the bytes are cut into chunks; arbitrary
  bytes never make the decoder raise.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ssehub import sse
from ssehub.exceptions import InvalidInput
from ssehub.parsing import MAX_DEPTH, MAX_DIGITS, loads, parse_integer

# A loaded machine makes the timing of one example meaningless: no deadline.
settings.register_profile("ssehub", deadline=None, max_examples=300)
settings.load_profile("ssehub")

MAXIMUM = 10**18 - 1


# -- parse_integer ------------------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=MAXIMUM), st.integers(min_value=0, max_value=3))
def test_an_integer_in_range_parses_to_itself_with_or_without_leading_zeros(n: int, zeros: int) -> None:
    text = "0" * zeros + str(n)
    if len(text) <= MAX_DIGITS:
        assert parse_integer(text, "n", maximum=MAXIMUM) == n


@given(st.integers())
def test_an_integer_out_of_range_is_refused(n: int) -> None:
    if 1 <= n <= 1000:
        assert parse_integer(str(n), "limit", minimum=1, maximum=1000) == n
    else:
        try:
            parse_integer(str(n), "limit", minimum=1, maximum=1000)
        except InvalidInput as exc:
            assert "limit must be an integer from 1 to 1000" in exc.message
        else:
            raise AssertionError(f"{n} was accepted")


@given(st.text())
def test_any_text_is_its_digits_value_or_an_invalid_input(text: str) -> None:
    digits = re.fullmatch(r"[0-9]{1,20}", text) is not None
    try:
        value = parse_integer(text, "n", maximum=MAXIMUM)
    except InvalidInput:
        assert not digits or int(text) > MAXIMUM
    else:
        assert digits and value == int(text)


# -- loads ------------------------------------------------------------------------------------------------------

# JSON values without NaN (not JSON) and without surrogates (st.text() generates none).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(json_values, st.booleans())
def test_a_json_document_comes_back_as_itself(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _depth(value) <= MAX_DEPTH
    assert loads(text.encode()) == value
    assert loads(text) == value


@given(st.lists(json_values, max_size=12), st.integers(min_value=0, max_value=12), st.sampled_from(["", " ", "\n\t"]))
def test_an_array_is_refused_exactly_when_it_has_too_many_items(items: list[Any], limit: int, space: str) -> None:
    text = "[" + space + ("," + space).join(json.dumps(i) for i in items) + space + "]"
    try:
        got = loads(text, max_items=limit, too_many="too many")
    except InvalidInput as exc:
        assert len(items) > limit and exc.message == "too many"
    else:
        assert len(items) <= limit and got == items


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_a_document_or_an_invalid_input(body: bytes) -> None:
    try:
        value = loads(body, max_items=3)
    except InvalidInput:
        return
    json.dumps(value, ensure_ascii=False).encode()  # whatever is accepted, UTF-8 can encode


@given(st.text(alphabet='[]{}",:0\\ud83ex \n', max_size=60))
def test_json_like_text_is_a_document_or_an_invalid_input(text: str) -> None:
    try:
        value = loads(text, max_items=2)
    except InvalidInput:
        return
    json.dumps(value, ensure_ascii=False).encode()


# -- sse --------------------------------------------------------------------------------------------------------

event_names = st.text(min_size=1).filter(lambda s: "\r" not in s and "\n" not in s)
ids = st.text().filter(lambda s: not set(s) & {"\r", "\n", "\0"})


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(st.tuples(st.text(), event_names, ids), min_size=1, max_size=5), st.lists(st.integers(0, 10**6)))
def test_encoded_events_decode_to_themselves_in_any_chunks(events: list[tuple[str, str, str]], cuts: list[int]) -> None:
    wire = b"".join(sse.encode(data, event=event, id=id) for data, event, id in events)
    decoder = sse.Decoder()
    got = [e for chunk in _chunks(wire, cuts) for e in decoder.feed(chunk)]
    expected = [(re.sub(r"\r\n|\r", "\n", data), event, id) for data, event, id in events]
    assert [(e.data, e.event, e.id) for e in got] == expected
    assert decoder.last_event_id == events[-1][2]


@given(st.binary(max_size=300), st.lists(st.integers(0, 10**6), max_size=5))
def test_the_decoder_takes_any_bytes(wire: bytes, cuts: list[int]) -> None:
    decoder = sse.Decoder()
    for chunk in _chunks(wire, cuts):
        for event in decoder.feed(chunk):
            assert event.event and "\n" not in event.event and "\0" not in event.id
    decoder.close()
