"""The pure pieces of the Durable Streams protocol, as tables of input and output (no I/O)."""

from __future__ import annotations

import base64
import json
import random

import pytest

from ssehub import Event, InvalidInput, sse
from ssehub.durable import frames, headers, messages, offsets

# -- offsets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_id", "text"),
    [
        (0, "0000000000000000_0000000000000000"),
        (7, "0000000000000007_0000000000000000"),
        (10**15, "1" + "0" * 15 + "_" + "0" * 16),
    ],
)
def test_offsets_round_trip(last_id: int, text: str) -> None:
    assert offsets.encode(last_id) == text
    assert offsets.parse(text) == last_id


def test_offsets_sort_as_their_ids() -> None:
    ids = [0, 1, 2, 9, 10, 11, 99, 100, 12345]
    assert sorted(offsets.encode(i) for i in ids) == [offsets.encode(i) for i in ids]


@pytest.mark.parametrize(("value", "expected"), [("-1", 0), ("now", "now")])
def test_offset_sentinels(value: str, expected: object) -> None:
    assert offsets.parse(value) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0",
        "abc",
        "0,1",
        "0 1",
        "../x",
        "-2",
        "NOW",
        "0000000000000000_0000000000000001",
        "0000000000000000_000000000000000",
        "\uff11" * 16 + "_" + "0" * 16,  # fullwidth digits are digits to \\d, not to an offset
    ],
)
def test_bad_offsets(bad: str) -> None:
    with pytest.raises(InvalidInput):
        offsets.parse(bad)


# -- headers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("0", 0), ("3600", 3600), ("99999", 99999)])
def test_stream_ttl(value: str | None, expected: int | None) -> None:
    assert headers.stream_ttl(value) == expected


@pytest.mark.parametrize("bad", ["abc", "-1", "+60", "00060", "60.5", "1e3", " 60", "", "9" * 30])
def test_bad_stream_ttl(bad: str) -> None:
    with pytest.raises(InvalidInput, match="Stream-TTL"):
        headers.stream_ttl(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-01T00:00:00Z", 1893456000.0),
        ("2030-01-01T00:00:00.500Z", 1893456000.5),
        ("2030-01-01T01:00:00+01:00", 1893456000.0),
        ("2030-01-01t00:00:00z", 1893456000.0),
    ],
)
def test_expires_at(value: str, expected: float) -> None:
    assert headers.expires_at(value) == expected


@pytest.mark.parametrize("bad", ["not-a-timestamp", "2030-01-01", "2030-01-01T00:00:00", "2030-13-01T00:00:00Z"])
def test_bad_expires_at(bad: str) -> None:
    with pytest.raises(InvalidInput, match="Stream-Expires-At"):
        headers.expires_at(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("false", False),
        ("1", False),
        ("yes", False),
        ("", False),
    ],
)
def test_stream_closed_counts_only_true(value: str | None, expected: bool) -> None:
    assert headers.is_true(value) is expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, None),
        ({"producer-id": "p", "producer-epoch": "0", "producer-seq": "0"}, ("p", 0, 0)),
        ({"producer-id": "p", "producer-epoch": "3", "producer-seq": str(2**53 - 1)}, ("p", 3, 2**53 - 1)),
    ],
)
def test_producer(given: dict[str, str], expected: object) -> None:
    assert headers.producer(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        {"producer-id": "p"},
        {"producer-id": "p", "producer-epoch": "0"},
        {"producer-epoch": "0", "producer-seq": "0"},
        {"producer-id": "", "producer-epoch": "0", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "0", "producer-seq": "1abc"},
        {"producer-id": "p", "producer-epoch": "0xyz", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "1e3", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "-1", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "0", "producer-seq": str(2**53)},
    ],
)
def test_bad_producer(given: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match="Producer"):
        headers.producer(given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, None),
        ({"stream-forked-from": "/v1/stream/a"}, headers.ForkRequest("/v1/stream/a", None, 0)),
        (
            {"stream-forked-from": "a", "stream-fork-offset": "x", "stream-fork-sub-offset": "3"},
            headers.ForkRequest("a", "x", 3),
        ),
        ({"stream-forked-from": "a", "stream-fork-sub-offset": "0"}, headers.ForkRequest("a", None, 0)),
    ],
)
def test_fork_request(given: dict[str, str], expected: object) -> None:
    assert headers.fork_request(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        {"stream-fork-sub-offset": "0"},
        {"stream-fork-offset": "x"},
        {"stream-forked-from": " "},
        {"stream-forked-from": "a", "stream-fork-sub-offset": "1"},
        *(
            {"stream-forked-from": "a", "stream-fork-offset": "x", "stream-fork-sub-offset": v}
            for v in ["-1", "abc", "1.5", "05", "+1"]
        ),
    ],
)
def test_bad_fork_request(given: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        headers.fork_request(given)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text/plain", "text/plain"),
        ("TEXT/PLAIN", "text/plain"),
        ("application/json; charset=utf-8", "application/json"),
        (None, ""),
    ],
)
def test_media_type(value: str | None, expected: str) -> None:
    assert headers.media_type(value) == expected


def test_etag_changes_with_the_close() -> None:
    open_tag, closed_tag = headers.etag("s", "-1", "e", False), headers.etag("s", "-1", "e", True)
    assert open_tag == '"s:-1:e"' and closed_tag == '"s:-1:e:c"'
    assert headers.etag_matches(open_tag, open_tag) and headers.etag_matches(f'"x", W/{open_tag}', open_tag)
    assert not headers.etag_matches(open_tag, closed_tag) and not headers.etag_matches(None, open_tag)


@pytest.mark.parametrize(
    ("client", "now", "expected"),
    [
        (None, headers.CURSOR_EPOCH + 41, "2"),
        ("1", headers.CURSOR_EPOCH + 41, "2"),
        ("junk", headers.CURSOR_EPOCH + 41, "2"),
    ],
)
def test_cursor_is_the_interval(client: str | None, now: float, expected: str) -> None:
    assert headers.response_cursor(client, now) == expected


@pytest.mark.parametrize("client", ["2", "5", "1000"])
def test_cursor_jumps_ahead_of_a_client_that_has_it(client: str) -> None:
    rng = random.Random(7)
    for _ in range(50):
        got = int(headers.response_cursor(client, headers.CURSOR_EPOCH + 41, rng))
        assert int(client) < got <= int(client) + 3600 // headers.CURSOR_INTERVAL


# -- messages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": 1}', ['{"a":1}']),
        (b'[{"a":1},{"b":2}]', ['{"a":1}', '{"b":2}']),
        (b"[[1,2]]", ["[1,2]"]),
        (b"[[[1,2,3]]]", ["[[1,2,3]]"]),
        (b'"s"', ['"s"']),
        (b"42", ["42"]),
        ('["é"]'.encode(), ['"é"']),
    ],
)
def test_json_messages_flatten_one_level(body: bytes, expected: list[str]) -> None:
    assert messages.json_messages(body, allow_empty=False) == expected


@pytest.mark.parametrize("bad", [b"{ invalid json }", b"NaN", b"[Infinity]", b"\xff", b""])
def test_json_messages_refuse_what_is_not_json(bad: bytes) -> None:
    with pytest.raises(InvalidInput, match="not valid JSON"):
        messages.json_messages(bad, allow_empty=False)


def test_an_empty_array_is_nothing_on_create_and_an_error_on_append() -> None:
    assert messages.json_messages(b"[]", allow_empty=True) == []
    with pytest.raises(InvalidInput, match="empty JSON array"):
        messages.json_messages(b"[]", allow_empty=False)


@pytest.mark.parametrize(
    ("media", "binary"),
    [
        ("text/plain", False),
        ("text/csv", False),
        ("application/json", False),
        ("application/octet-stream", True),
        ("image/png", True),
        ("application/x-protobuf", True),
    ],
)
def test_binary_types(media: str, binary: bool) -> None:
    assert messages.is_binary(media) is binary


def test_bytes_round_trip_through_event_data() -> None:
    raw = bytes(range(256))
    data = messages.encode_bytes("application/octet-stream", raw)
    assert data == base64.b64encode(raw).decode()
    assert messages.decode("application/octet-stream", Event(1, "message", data)) == raw
    assert messages.encode_bytes("text/plain", "é\r\n".encode()) == "é\r\n"
    with pytest.raises(InvalidInput, match="UTF-8"):
        messages.encode_bytes("text/plain", b"\xff")


@pytest.mark.parametrize(
    ("events", "body"),
    [
        ([], b"[]"),
        ([Event(1, "message", '{"a":1}'), Event(2, "message", "2")], b'[{"a":1},2]'),
        # Topics published through ssehub's own interface: named events keep their names.
        ([Event(1, "text_delta", '{"content":"x"}')], b'[{"event":"text_delta","data":{"content":"x"}}]'),
        ([Event(1, "message", "plain text")], b'["plain text"]'),
        ([Event(1, "log", "plain")], b'[{"event":"log","data":"plain"}]'),
    ],
)
def test_json_join(events: list[Event], body: bytes) -> None:
    assert messages.join("application/json", events) == body
    json.loads(body)


# -- frames --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "wire"),
    [
        ("hello", b"event: data\ndata:hello\n\n"),
        ("a\nb\r\nc\rd", b"event: data\ndata:a\ndata:b\ndata:c\ndata:d\n\n"),
        (" lead", b"event: data\ndata:  lead\n\n"),
        ("", b"event: data\ndata:\n\n"),
        ("x\n\nevent: control\ndata: {}", b"event: data\ndata:x\ndata:\ndata:event: control\ndata:data: {}\n\n"),
    ],
)
def test_data_frames(payload: str, wire: bytes) -> None:
    assert frames.data(payload) == wire
    decoded = sse.Decoder().feed(wire)
    assert [(e.event, e.data) for e in decoded] == [("data", payload.replace("\r\n", "\n").replace("\r", "\n"))]


@pytest.mark.parametrize(
    ("kwargs", "body"),
    [
        ({"cursor": "9", "up_to_date": False, "closed": False}, {"streamNextOffset": "o", "streamCursor": "9"}),
        (
            {"cursor": "9", "up_to_date": True, "closed": False},
            {"streamNextOffset": "o", "streamCursor": "9", "upToDate": True},
        ),
        (
            {"cursor": "9", "up_to_date": True, "closed": True},
            {"streamNextOffset": "o", "upToDate": True, "streamClosed": True},
        ),
    ],
)
def test_control_frames(kwargs: dict[str, object], body: dict[str, object]) -> None:
    wire = frames.control("o", **kwargs)  # type: ignore[arg-type]
    assert wire.startswith(b"event: control\ndata:{")
    (event,) = sse.Decoder().feed(wire)
    assert event.event == "control" and json.loads(event.data) == body
