"""Tests for the SSE wire format: tables of bytes in and events out.

Every decoding case is fed whole, in 3-byte chunks, one byte at a time and split in
two at every offset: chunk boundaries must never change the result.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator

import pytest

from ssehub.sse import Decoder, ServerSentEvent, encode, encode_comment, encode_retry

E = ServerSentEvent


def chunkings(raw: bytes) -> Iterator[list[bytes]]:
    yield [raw]
    yield [raw[i : i + 3] for i in range(0, len(raw), 3)]
    yield [raw[i : i + 1] for i in range(len(raw))]
    for i in range(1, len(raw)):
        yield [raw[:i], raw[i:]]


def decode(chunks: Iterable[bytes], decoder: Decoder | None = None) -> list[ServerSentEvent]:
    d = Decoder() if decoder is None else decoder
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(d.feed(chunk))
    assert d.close() == []
    return events


BOM = "\ufeff".encode()

# (bytes in, events out, last_event_id afterwards, retry afterwards)
DECODE_CASES = [
    # Line endings, alone and mixed.
    pytest.param(b"data: a\n\n", [E("a")], "", None, id="lf"),
    pytest.param(b"data: a\r\n\r\n", [E("a")], "", None, id="crlf"),
    pytest.param(b"data: a\r\r", [E("a")], "", None, id="cr"),
    pytest.param(b"data: a\r\ndata: b\rdata: c\n\r\n", [E("a\nb\nc")], "", None, id="mixed"),
    pytest.param(b"data: a\n\r", [E("a")], "", None, id="lf-then-cr"),
    pytest.param(b"data: a\n\rdata: b\n\n", [E("a"), E("b")], "", None, id="lf-cr-is-two-endings"),
    pytest.param(b"data: a\r\n\ndata: b\r\r\n", [E("a"), E("b")], "", None, id="crlf-lf-and-cr-crlf"),
    pytest.param(b"data: a\r\n\r\n\r\n\n\r\rdata: b\n\n", [E("a"), E("b")], "", None, id="extra-blank-lines"),
    # Byte order mark: stripped once, at the very start only.
    pytest.param(BOM + b"data: a\n\n", [E("a")], "", None, id="bom"),
    pytest.param(BOM + BOM + b"data: a\n\n", [], "", None, id="second-bom-is-part-of-field-name"),
    pytest.param(BOM + b"\n" + BOM + b"data: b\n\n", [], "", None, id="bom-on-later-line-kept"),
    pytest.param(b"data: a\n\n" + BOM + b"data: b\n\n", [E("a")], "", None, id="bom-not-at-start"),
    pytest.param(b"data: " + BOM + b"a\n\n", [E("\ufeffa")], "", None, id="bom-inside-value-kept"),
    # UTF-8.
    pytest.param("data: héllo € 𝄞\n\n".encode(), [E("héllo € 𝄞")], "", None, id="multibyte"),
    pytest.param(b"data: a\xffb\n\n", [E("a\ufffdb")], "", None, id="invalid-byte"),
    pytest.param(b"data: \xe2\x82\n\n", [E("\ufffd")], "", None, id="truncated-sequence"),
    pytest.param(b"data: \xc3\n\xa9\n\n", [E("\ufffd")], "", None, id="line-end-inside-sequence"),
    pytest.param(b"\xef\xbbdata: a\n\n", [], "", None, id="truncated-bom-is-not-a-bom"),
    # Comments and unknown fields.
    pytest.param(b": hello\ndata: a\n:\n: bye\n\n", [E("a")], "", None, id="comments"),
    pytest.param(b": ping\n\n", [], "", None, id="comment-only"),
    pytest.param(b"foo: bar\ndata: a\nfoo\n\n", [E("a")], "", None, id="unknown-field"),
    pytest.param(b"Data: a\nDATA: b\nEvent: x\n\n", [], "", None, id="field-names-case-sensitive"),
    pytest.param(b" data: a\ndata : b\n\n", [], "", None, id="no-whitespace-around-field-name"),
    # Field/value split and the leading space.
    pytest.param(b"data\n\n", [E("")], "", None, id="data-without-colon"),
    pytest.param(b"data:\n\n", [E("")], "", None, id="data-colon-empty"),
    pytest.param(b"data: \n\n", [E("")], "", None, id="data-colon-space"),
    pytest.param(b"data:a\n\n", [E("a")], "", None, id="no-space"),
    pytest.param(b"data:  a \n\n", [E(" a ")], "", None, id="only-one-space-stripped"),
    pytest.param(b"data:\ta\n\n", [E("\ta")], "", None, id="tab-not-stripped"),
    pytest.param(b"data: a: b:c\n\n", [E("a: b:c")], "", None, id="split-at-first-colon"),
    # Multi-line data.
    pytest.param(b"data: a\ndata: b\n\n", [E("a\nb")], "", None, id="two-data-lines"),
    pytest.param(b"data: a\ndata\n\n", [E("a\n")], "", None, id="trailing-empty-data-line"),
    pytest.param(b"data\ndata\n\n", [E("\n")], "", None, id="two-empty-data-lines"),
    pytest.param(b"data: a\n: c\nfoo: x\ndata: b\n\n", [E("a\nb")], "", None, id="data-lines-interleaved"),
    # Event type.
    pytest.param(b"event: add\ndata: a\n\n", [E("a", "add")], "", None, id="event-type"),
    pytest.param(b"event: a\nevent: b\ndata: x\n\n", [E("x", "b")], "", None, id="last-event-line-wins"),
    pytest.param(b"event:\ndata: x\n\n", [E("x")], "", None, id="empty-event-is-message"),
    pytest.param(
        b"event: add\ndata: a\n\ndata: b\n\n",
        [E("a", "add"), E("b")],
        "",
        None,
        id="event-type-reset-on-dispatch",
    ),
    pytest.param(b"event: add\n\n", [], "", None, id="event-without-data-not-dispatched"),
    pytest.param(b"event: add\n\ndata: b\n\n", [E("b")], "", None, id="event-type-reset-without-dispatch"),
    pytest.param(b"event: add\n\r\n", [], "", None, id="event-alone-crlf"),
    # Last event ID.
    pytest.param(b"id: 1\ndata: a\n\n", [E("a", id="1")], "1", None, id="id"),
    pytest.param(b"data: a\nid: 1\n\n", [E("a", id="1")], "1", None, id="id-after-data"),
    pytest.param(b"id: 1\ndata: a\n\ndata: b\n\n", [E("a", id="1"), E("b", id="1")], "1", None, id="id-sticky"),
    pytest.param(b"id: 1\n\ndata: b\n\n", [E("b", id="1")], "1", None, id="id-without-data"),
    pytest.param(b"id: 1\ndata: a\n\nid\ndata: b\n\n", [E("a", id="1"), E("b")], "", None, id="id-empty-resets"),
    pytest.param(b"id: 1\n\nid:\n\n", [], "", None, id="id-colon-empty-resets"),
    pytest.param(
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [E("a", id="1"), E("b", id="1")],
        "1",
        None,
        id="id-with-nul-ignored",
    ),
    pytest.param(b"id:  7 \ndata: a\n\n", [E("a", id=" 7 ")], " 7 ", None, id="id-one-space-stripped"),
    pytest.param("id: é€\ndata\n\n".encode(), [E("", id="é€")], "é€", None, id="id-unicode"),
    # Reconnection time.
    pytest.param(b"retry: 10\n\n", [], "", 10, id="retry"),
    pytest.param(b"retry: 10\ndata: a\n\n", [E("a")], "", 10, id="retry-not-on-event"),
    pytest.param(b"retry: 0\n\n", [], "", 0, id="retry-zero"),
    pytest.param(b"retry: 0042\n\n", [], "", 42, id="retry-leading-zeros"),
    pytest.param(b"retry: 10a\n\n", [], "", None, id="retry-trailing-garbage"),
    pytest.param(b"retry: -1\n\n", [], "", None, id="retry-negative"),
    pytest.param(b"retry: 1.5\n\n", [], "", None, id="retry-decimal"),
    pytest.param(b"retry:\n\n", [], "", None, id="retry-empty"),
    pytest.param(b"retry:  10\n\n", [], "", None, id="retry-second-space-not-a-digit"),
    pytest.param("retry: ٣\n\n".encode(), [], "", None, id="retry-non-ascii-digit"),
    pytest.param(b"retry: 10\nretry: x\n\n", [], "", 10, id="invalid-retry-keeps-previous"),
    pytest.param(b"retry: 10\nretry: 20\n", [], "", 20, id="retry-applies-before-blank-line"),
    pytest.param(b"retry: " + b"9" * 5000 + b"\n\n", [], "", None, id="retry-too-many-digits"),
    # End of stream: the unterminated block is discarded.
    pytest.param(b"", [], "", None, id="empty-stream"),
    pytest.param(b"data: a", [], "", None, id="unterminated-line"),
    pytest.param(b"data: a\n", [], "", None, id="unterminated-block"),
    pytest.param(b"data: a\n\ndata: b\n", [E("a")], "", None, id="trailing-block-discarded"),
    pytest.param(b"data: a\n\nid: 9\ndata: b\n", [E("a")], "", None, id="id-of-discarded-block-not-committed"),
    pytest.param(b"id: 1\n\nid: 2\n", [], "1", None, id="uncommitted-id-without-data"),
]


@pytest.mark.parametrize(("raw", "events", "last_event_id", "retry"), DECODE_CASES)
def test_decode(raw: bytes, events: list[ServerSentEvent], last_event_id: str, retry: int | None) -> None:
    for chunks in chunkings(raw):
        d = Decoder()
        assert decode(chunks, d) == events, chunks
        assert d.last_event_id == last_event_id, chunks
        assert d.retry == retry, chunks


def test_cr_dispatches_without_waiting_for_next_chunk() -> None:
    # A CR-terminated stream must not hold an event back to see whether LF follows.
    d = Decoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\r") == [E("a")]
    assert d.feed(b"\ndata: b\r\n\r") == [E("b")]
    assert d.feed(b"\n") == []
    assert d.close() == []


def test_cr_then_lf_in_next_chunk_is_one_line_end() -> None:
    d = Decoder()
    assert d.feed(b"data: a\r") == []
    # Empty chunks and chunks that decode to nothing yet must not forget the pending CR.
    assert d.feed(b"") == []
    assert d.feed(b"\n") == []
    assert d.feed(b"data: b\r") == []
    assert d.feed(b"\n\r") == [E("a\nb")]


def test_pending_cr_survives_partial_utf8_chunk() -> None:
    d = Decoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\xc3") == []  # first half of "é", nothing decoded yet
    assert d.feed(b"\xa9\n\n") == [E("a")]  # "é\n" was a line of its own: unknown field


def test_bom_split_byte_by_byte_is_stripped_once() -> None:
    d = Decoder()
    for byte in BOM + BOM:
        assert d.feed(bytes([byte])) == []
    assert d.feed(b"data: a\n\ndata: b\n\n") == [E("b")]


def test_events_returned_by_the_chunk_that_completes_them() -> None:
    d = Decoder()
    assert d.feed(b"data: a\n\ndata: b\n\ndata: c\n") == [E("a"), E("b")]
    assert d.feed(b"\n") == [E("c")]


def test_close_discards_pending_and_allows_reuse() -> None:
    d = Decoder()
    assert d.feed(b"retry: 5\nid: 1\ndata: a\n\nid: 2\nevent: x\ndata: b\n") == [E("a", id="1")]
    assert d.close() == []
    # The next connection starts clean (a new BOM is stripped, no leftover data, type,
    # uncommitted id or partial character) but keeps the last event ID and retry.
    assert d.feed(BOM + b"data: c\n\n\xe2\x82") == [E("c", id="1")]
    assert d.close() == []
    assert d.feed(b"data: d\n\n") == [E("d", id="1")]
    assert (d.last_event_id, d.retry) == ("1", 5)


def test_close_forgets_pending_cr() -> None:
    d = Decoder()
    assert d.feed(b"data: a\r") == []
    d.close()
    # This LF is the first line end of a new stream: an empty line, not part of a CRLF.
    assert d.feed(b"\ndata: b\n\n") == [E("b")]


def test_last_event_id_can_be_set_to_resume() -> None:
    d = Decoder()
    d.last_event_id = "41"
    assert d.feed(b"data: a\n\nid: 42\ndata: b\n\n") == [E("a", id="41"), E("b", id="42")]
    assert d.last_event_id == "42"
    with pytest.raises(ValueError):
        d.last_event_id = "4\n2"


def test_long_line_in_small_chunks() -> None:
    # Quadratic buffering would make this take many seconds.
    payload = b"x" * 1_000_000
    raw = b"data: " + payload + b"\n\n"
    events = decode(raw[i : i + 64] for i in range(0, len(raw), 64))
    assert events == [E(payload.decode())]


def test_many_events_in_one_chunk() -> None:
    raw = b"".join(encode(str(i), id=i) for i in range(10_000))
    d = Decoder()
    events = d.feed(raw)
    assert events == [E(str(i), id=str(i)) for i in range(10_000)]
    assert d.last_event_id == "9999"


# ---------------------------------------------------------------------------------------
# Encoding


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        pytest.param(encode("hi"), b"data: hi\n\n", id="data"),
        pytest.param(encode(""), b"data: \n\n", id="empty-data"),
        pytest.param(encode("a\nb\r\nc\rd"), b"data: a\ndata: b\ndata: c\ndata: d\n\n", id="multi-line"),
        pytest.param(encode("a\n"), b"data: a\ndata: \n\n", id="trailing-newline"),
        pytest.param(encode(" x"), b"data:  x\n\n", id="leading-space"),
        pytest.param(encode("é"), "data: é\n\n".encode(), id="utf8"),
        pytest.param(
            encode("x", event="e", id=3, retry=100, comment="c1\nc2"),
            b": c1\n: c2\nretry: 100\nid: 3\nevent: e\ndata: x\n\n",
            id="field-order",
        ),
        pytest.param(encode(id="7"), b"id: 7\n\n", id="id-only"),
        pytest.param(encode(id=""), b"id: \n\n", id="empty-id"),
        pytest.param(encode(retry=0), b"retry: 0\n\n", id="retry-only"),
        pytest.param(encode(comment=""), b":\n\n", id="empty-comment"),
        pytest.param(encode(), b"\n", id="nothing"),
        pytest.param(encode_comment(), b":\n\n", id="heartbeat"),
        pytest.param(encode_comment("ping"), b": ping\n\n", id="comment"),
        pytest.param(encode_comment("a\r\n\nb"), b": a\n:\n: b\n\n", id="multi-line-comment"),
        pytest.param(encode_retry(3000), b"retry: 3000\n\n", id="encode-retry"),
    ],
)
def test_encode(frame: bytes, expected: bytes) -> None:
    assert frame == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"event": "a\nb"}, id="lf-in-event"),
        pytest.param({"event": "a\rb"}, id="cr-in-event"),
        pytest.param({"event": ""}, id="empty-event"),
        pytest.param({"id": "a\nb"}, id="lf-in-id"),
        pytest.param({"id": "a\rb"}, id="cr-in-id"),
        pytest.param({"id": "a\0b"}, id="nul-in-id"),
        pytest.param({"retry": -1}, id="negative-retry"),
    ],
)
def test_encode_rejects(kwargs: dict[str, str | int]) -> None:
    with pytest.raises(ValueError):
        encode("x", **kwargs)  # type: ignore[arg-type]
    # The event object applies the same rules, so an unencodable event cannot exist.
    with pytest.raises(ValueError):
        E("x", **kwargs)  # type: ignore[arg-type]


def test_encode_retry_rejects_negative() -> None:
    with pytest.raises(ValueError):
        encode_retry(-1)


def test_event_is_immutable() -> None:
    ev = E("a")
    with pytest.raises(AttributeError):
        ev.data = "b"  # type: ignore[misc]
    assert (ev.data, ev.event, ev.id, ev.retry) == ("a", "message", "", None)


@pytest.mark.parametrize(
    ("data", "decoded"),
    [
        ("hello", "hello"),
        ("", ""),
        ("\n", "\n"),
        ("a\nb", "a\nb"),
        # The format has no way to carry CR: CRLF and CR come back as LF.
        ("a\r\nb\rc\n", "a\nb\nc\n"),
        ("\r\n\r\n", "\n\n"),
        (" leading and trailing ", " leading and trailing "),
        (": not a comment", ": not a comment"),
        ("data: x\n\ndata: y", "data: x\n\ndata: y"),
        ("\ufeffbom", "\ufeffbom"),
        ("héllo 🎉 \u2028 \x0b \x1c \x85", "héllo 🎉 \u2028 \x0b \x1c \x85"),
        ("nul\0", "nul\0"),
    ],
)
@pytest.mark.parametrize(
    ("event", "id"),
    [(None, None), ("update", 42), ("ünïcode", "id with spaces: and colon"), (None, "")],
)
def test_round_trip(data: str, decoded: str, event: str | None, id: str | int | None) -> None:
    frame = encode(data, event=event, id=id, retry=1000, comment="a\nb")
    expected = E(decoded, event or "message", "" if id is None else str(id))
    for chunks in (
        [frame],
        [frame[i : i + 1] for i in range(len(frame))],
        # A BOM may only appear at the start of the stream, before the first frame.
        [BOM, frame],
    ):
        d = Decoder()
        assert decode(chunks, d) == [expected]
        assert d.retry == 1000


def test_random_chunking_of_long_stream() -> None:
    rng = random.Random(20240601)
    pieces = ["a", "Z", " ", ":", "\n", "\r", "\r\n", "é", "€", "𝄞", "\ufeff", "\0", "data: ", "id"]
    frames: list[bytes] = []
    expected: list[ServerSentEvent] = []
    last_id = ""
    retry: int | None = None
    for i in range(500):
        data = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        event = rng.choice([None, "message", "update", "déjà vu"])
        id: str | int | None = rng.choice([None, None, i, f"id-{i}", ""])
        frame_retry = rng.choice([None, None, None, rng.randrange(0, 100_000)])
        comment = rng.choice([None, None, "", "keep\nalive"])
        if id is not None:
            last_id = str(id)
        if rng.random() < 0.1:
            # A frame without data only sets the id and/or retry: no event.
            frames.append(encode(id=id, retry=frame_retry, comment=comment))
        else:
            frames.append(encode(data, event=event, id=id, retry=frame_retry, comment=comment))
            expected.append(E(re.sub(r"\r\n?", "\n", data), event or "message", last_id))
        if frame_retry is not None:
            retry = frame_retry
        if rng.random() < 0.1:
            frames.append(encode_comment(rng.choice(["", "ping"])))
    raw = BOM + b"".join(frames)

    for _ in range(30):
        chunks: list[bytes] = []
        pos = 0
        while pos < len(raw):
            size = rng.choice([1, 2, 3, rng.randrange(1, 100), rng.randrange(1, 5000)])
            chunks.append(raw[pos : pos + size])
            pos += size
        d = Decoder()
        assert decode(chunks, d) == expected
        assert (d.last_event_id, d.retry) == (last_id, retry)
