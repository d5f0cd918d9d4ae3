"""The values that move through a hub, validated when built."""

from __future__ import annotations

import math

import pytest

from ssehub.events import Event, NewEvent, TopicInfo, validate_topic
from ssehub.exceptions import InvalidInput, InvalidTopic


@pytest.mark.parametrize("name", ["t", "a/b/c", "build-42", "x.y:z_1", "A" * 200])
def test_valid_topics(name: str) -> None:
    assert validate_topic(name) == name


@pytest.mark.parametrize("name", ["", "A" * 201, "a b", "é", "a\nb", "a?b", "a#b", "a%2Fb", "\x00"])
def test_invalid_topics(name: str) -> None:
    with pytest.raises(InvalidTopic, match="invalid topic name"):
        validate_topic(name)


@pytest.mark.parametrize("name", ["", "a b", "x" * 101, "line\nbreak", "é"])
def test_invalid_event_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid event name"):
        NewEvent(name, "")


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({"b": 1, "a": [1, 2]}, '{"b":1,"a":[1,2]}'),  # compact, key order kept
        ("héllo", '"héllo"'),  # UTF-8 as it is, not \\u escapes
        (None, "null"),
        (0, "0"),
    ],
)
def test_json_data_is_kept_as_compact_text(data: object, text: str) -> None:
    assert NewEvent.from_json("n", data) == NewEvent("n", text)


@pytest.mark.parametrize("data", [math.nan, math.inf, {1, 2}, object(), {"k": b"bytes"}])
def test_data_that_is_not_json(data: object) -> None:
    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        NewEvent.from_json("n", data)


def test_size_counts_encoded_bytes() -> None:
    assert NewEvent("ab", "é").size == 2 + 2
    assert NewEvent().size == len("message")


def test_stored_event_keeps_its_data_as_text() -> None:
    event = Event(3, "n", "0", 1.5)
    assert event.as_dict() == {"id": 3, "event": "n", "data": "0", "time": 1.5}
    assert event.json() == 0


def test_topic_info() -> None:
    info = TopicInfo("t", last_id=4, first_id=2, created=1.0, updated=2.0)
    assert not info.closed
    assert info.as_dict() == {
        "topic": "t",
        "last_id": 4,
        "first_id": 2,
        "status": "open",
        "created": 1.0,
        "updated": 2.0,
        "closed_at": None,
        "epoch": "",
    }
    closed = TopicInfo("t", status="failed", closed_at=3.0, meta={"agent": "chat"})
    assert closed.closed
    assert closed.as_dict(subscribers=2)["meta"] == {"agent": "chat"}
    assert closed.as_dict(subscribers=2)["subscribers"] == 2


def test_values_are_immutable() -> None:
    with pytest.raises(AttributeError):
        NewEvent("n", "x").data = "y"  # type: ignore[misc]
