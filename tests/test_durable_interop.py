"""One log, two protocols, through real sockets: what the Durable Streams interface writes is read as
ssehub SSE (Last-Event-ID resumes) and the reverse, across a server restart too; and the protocol's own
clients -- @durable-streams/client from npm and durable-streams from PyPI -- read what ssehub's SDK writes
and write what an EventSource (npm `eventsource`, and ssehub's client) reads."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import durable_streams
import httpx
import pytest

import ssehub
from durable_harness import HARNESS, require_harness
from ssehub import sse
from ssehub.durable import offsets
from support import ServerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hub(server: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    return server("--store", f"sqlite:///{tmp_path / 'hub.db'}", "--long-poll-timeout", "1")


def node(script: str, *args: str, timeout: float = 60) -> list[Any]:
    """Run a script of the Node harness; its standard output, one JSON value per line."""
    done = subprocess.run(
        [require_harness(), script, *args], cwd=HARNESS, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{script} failed ({done.returncode}): {done.stderr[-3000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def ds_sse(url: str, offset: str = "-1", *, until_closed: bool = True) -> tuple[list[Any], list[str]]:
    """Read a JSON stream in the protocol's SSE mode, reconnecting from the last control event's
    offset as its clients do, until the stream is closed; the messages and the offsets seen."""
    items: list[Any] = []
    seen: list[str] = []
    while True:
        decoder = sse.Decoder()
        try:
            with httpx.stream("GET", url, params={"offset": offset, "live": "sse"}, timeout=10) as response:
                if response.status_code != 200:
                    raise AssertionError(f"SSE read answered {response.status_code}")
                for chunk in response.iter_bytes():
                    for event in decoder.feed(chunk):
                        if event.event == "data":
                            items.extend(json.loads(event.data))
                        elif event.event == "control":
                            control = json.loads(event.data)
                            offset = control["streamNextOffset"]
                            seen.append(offset)
                            if control.get("streamClosed") or (not until_closed and control.get("upToDate")):
                                return items, seen
        except httpx.TransportError:
            pass  # the server went away (a restart): reconnect from the last offset


def test_a_durable_json_stream_read_as_ssehub_sse_with_last_event_id(hub: ServerProcess) -> None:
    url = f"{hub.url}/v1/stream/chat"
    assert httpx.put(url, headers={"content-type": "application/json"}, content=b'[{"n":1}]').status_code == 201
    response = httpx.post(url, headers={"content-type": "application/json"}, content=b'[{"n":2},{"n":3}]')
    assert response.status_code == 204
    assert offsets.parse(response.headers["stream-next-offset"]) == 3  # the offset is the last id
    httpx.post(url, headers={"stream-closed": "true"})
    with httpx.stream("GET", f"{hub.url}/topics/chat/events", headers={"last-event-id": "1"}, timeout=10) as stream:
        frames = sse.Decoder().feed(stream.read())
    assert [(e.id, e.event, json.loads(e.data)) for e in frames if e.data] == [
        ("2", "message", {"n": 2}),
        ("3", "message", {"n": 3}),
    ]
    with ssehub.Client(hub.url) as client:
        assert [(e.id, e.json()) for e in client.subscribe("chat", after=0)] == [
            (1, {"n": 1}),
            (2, {"n": 2}),
            (3, {"n": 3}),
        ]
    # The same log from the other side: a Durable Streams read from id 1's offset.
    page = httpx.get(url, params={"offset": offsets.encode(1)})
    assert page.json() == [{"n": 2}, {"n": 3}] and page.headers["stream-closed"] == "true"


def test_an_ssehub_topic_read_as_a_durable_json_stream(hub: ServerProcess) -> None:
    with ssehub.Client(hub.url) as client:
        client.publish("run-1", "text_delta", {"content": "Hel"})
        client.publish("run-1", "text_delta", {"content": "lo"})
        client.publish("run-1", "message", {"note": "plain"})
        client.close_topic("run-1")
    url = f"{hub.url}/v1/stream/run-1"
    head = httpx.head(url)
    assert head.headers["content-type"] == "application/json" and head.headers["stream-closed"] == "true"
    assert head.headers["stream-next-offset"] == offsets.encode(3)
    expected = [
        {"event": "text_delta", "data": {"content": "Hel"}},
        {"event": "text_delta", "data": {"content": "lo"}},
        {"note": "plain"},
    ]
    assert httpx.get(url).json() == expected
    items, seen = ds_sse(f"{hub.url}/v1/stream/run-1", offsets.encode(1))
    assert items == expected[1:] and seen[-1] == offsets.encode(3)


def test_the_same_events_in_the_same_order_across_a_restart(hub: ServerProcess) -> None:
    url = f"{hub.url}/v1/stream/restart"
    httpx.put(url, headers={"content-type": "application/json"})
    got: dict[str, list[Any]] = {}

    def durable_reader() -> None:
        got["durable"] = ds_sse(url)[0]

    def ssehub_reader() -> None:
        with ssehub.Client(hub.url) as client:
            got["ssehub"] = [e.json() for e in client.subscribe("restart", after=0)]

    readers = [threading.Thread(target=durable_reader), threading.Thread(target=ssehub_reader)]
    for t in readers:
        t.start()
    for n in range(3):
        httpx.post(url, headers={"content-type": "application/json"}, content=json.dumps({"n": n}))
    hub.restart()
    for n in range(3, 6):
        httpx.post(url, headers={"content-type": "application/json"}, content=json.dumps({"n": n}))
    httpx.post(url, headers={"stream-closed": "true"})
    for t in readers:
        t.join(60)
    assert got["durable"] == got["ssehub"] == [{"n": n} for n in range(6)]


def test_the_npm_client_reads_what_the_python_sdk_writes(hub: ServerProcess) -> None:
    with ssehub.Client(hub.url) as client:
        client.publish("sdk", "text_delta", {"content": "a"})
        client.publish("sdk", "progress", {"percent": 50})
    url = f"{hub.url}/v1/stream/sdk"
    caught_up = node("ds-client.mjs", "read", url, "--live", "false")
    assert caught_up[:-1] == [
        {"event": "text_delta", "data": {"content": "a"}},
        {"event": "progress", "data": {"percent": 50}},
    ]
    assert caught_up[-1] == {"end": offsets.encode(2)}
    # Live (SSE): the reader is at the tail while the SDK writes and closes the topic.
    reader = subprocess.Popen(
        [require_harness(), "ds-client.mjs", "read", url, "--live", "sse", "--offset", offsets.encode(2)],
        cwd=HARNESS,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with ssehub.Client(hub.url) as client:
            client.publish("sdk", "done", {"result": "ok"})
            client.close_topic("sdk")
        out, _ = reader.communicate(timeout=30)
    finally:
        reader.kill()
    assert [json.loads(line) for line in out.splitlines()] == [
        {"event": "done", "data": {"result": "ok"}},
        {"end": offsets.encode(3)},
    ]


def test_the_python_client_reads_what_the_python_sdk_writes(hub: ServerProcess) -> None:
    with ssehub.Client(hub.url) as client:
        client.publish("sdk-py", "message", {"n": 1})
        client.publish("sdk-py", "message", {"n": 2})
    url = f"{hub.url}/v1/stream/sdk-py"
    with durable_streams.stream(url, live=False) as res:
        assert list(res.iter_json()) == [{"n": 1}, {"n": 2}]
    with ssehub.Client(hub.url) as client:
        client.publish("sdk-py", "message", {"n": 3})
        client.close_topic("sdk-py")
    with durable_streams.stream(url, offset=offsets.encode(2), live="sse") as res:
        assert list(res.iter_json()) == [{"n": 3}]


def test_an_eventsource_reads_what_the_npm_client_writes(hub: ServerProcess) -> None:
    url = f"{hub.url}/v1/stream/from-npm"
    assert node("ds-client.mjs", "write", url, '{"a":1}', '"two"', "[3]") == [{"written": 3}]
    events = node("eventsource-read.mjs", f"{hub.url}/topics/from-npm/events?after=0")
    assert events == [
        {"id": "1", "event": "message", "data": '{"a":1}'},
        {"id": "2", "event": "message", "data": '"two"'},
        {"id": "3", "event": "message", "data": "[3]"},
    ]


def test_ssehub_clients_read_what_the_python_client_writes(hub: ServerProcess) -> None:
    url = f"{hub.url}/v1/stream/from-py"
    handle = durable_streams.DurableStream.create(url, content_type="application/json")
    try:
        for value in [{"a": 1}, "two"]:
            handle.append(value)
    finally:
        handle.close()
    assert httpx.post(url, headers={"stream-closed": "true"}).status_code == 204
    with ssehub.Client(hub.url) as client:
        assert [(e.id, e.json()) for e in client.subscribe("from-py", after=0)] == [(1, {"a": 1}), (2, "two")]
    events = node("eventsource-read.mjs", f"{hub.url}/topics/from-py/events?after=0")
    assert [e["data"] for e in events] == ['{"a":1}', '"two"']
