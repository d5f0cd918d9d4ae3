"""Delivery bounds over real `ssehub serve` processes and raw sockets: memory in bytes, stalled readers, heartbeats.

What the hub holds is bounded in bytes, not counts: the tail of a topic (`--tail-bytes`), all the
tails (`--tail-total-bytes`), what a subscriber is handed at once (`--page-bytes`); a subscriber
whose socket takes nothing for `--stall-timeout` is cut, and resumes from its Last-Event-ID with
nothing lost. Keep-alives come so that no silence outlasts `--heartbeat`, and the `retry:` hint that
ends streams on shutdown is jittered so that the clients do not all come back at once.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ssehub.sse import Decoder, ServerSentEvent
from support import ServerProcess

Server = Callable[..., ServerProcess]


def _sqlite(tmp_path: Path) -> list[str]:
    return ["--store", f"sqlite:///{tmp_path}/delivery.db"]


def _publish(url: str, topic: str, count: int, size: int, start: int = 1) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(start, start + count):
            # The event's number first, so that the reader can check each arrives once and in order.
            body = f"{i}:".encode() + b"x" * (size - len(str(i)) - 1)
            r = client.post(f"/topics/{topic}/events", content=body, headers={"content-type": "text/plain"})
            assert r.status_code == 200, r.text


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    match = re.search(rf"^{name}(?:_total)? (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def _open(
    port: int, topic: str, last_id: int | None = None, rcvbuf: int | None = None, query: str = ""
) -> socket.socket:
    """A raw HTTP/1.1 subscription: the test decides when (and whether) to read."""
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: it sets the window
    s.connect(("127.0.0.1", port))
    resume = "" if last_id is None else f"Last-Event-ID: {last_id}\r\n"
    request = f"GET /topics/{topic}/events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
    request += f"{resume}\r\n"
    s.sendall(request.encode())
    return s


class Chunked:
    """Reads a chunked HTTP response from a raw socket: the body's chunks, each as the server wrote it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer, self.ended = sock, b"", False
        self.head = self._until(b"\r\n\r\n")
        assert self.head.startswith(b"HTTP/1.1 200"), self.head

    def _more(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError
        self.buffer += data

    def _until(self, mark: bytes) -> bytes:
        while mark not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(mark)
        return head

    def chunk(self) -> bytes | None:
        """The next chunk; None at the end of the response (or when the server closed the connection)."""
        try:
            size = int(self._until(b"\r\n"), 16)
            while len(self.buffer) < size + 2:
                self._more()
        except EOFError:
            self.ended = True
            return None
        data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
        if size == 0:
            self.ended = True
            return None
        return data


def _numbers(events: list[ServerSentEvent]) -> list[int]:
    """The numbers the events carry (see `_publish`), checked against their ids."""
    out = []
    for e in events:
        number = int(e.data.partition(":")[0])
        assert e.id == str(number), (e.id, e.data[:20])
        out.append(number)
    return out


def test_tail_is_bounded_in_bytes_and_a_replay_from_the_store_gets_every_event_once(
    server: Server, tmp_path: Path
) -> None:
    srv = server(*_sqlite(tmp_path), "--tail-bytes", "100000", "--page-bytes", "30000")
    # A live reader keeps the topic's tail loaded while 200 events of 2 KB (about 800 KB counted) go in.
    live = _open(srv.port, "t")
    live_reader = Chunked(live)
    _publish(srv.url, "t", 200, 2000)
    tail = _metric(srv.url, "ssehub_tail_bytes")
    assert 0 < tail <= 100_000, tail  # by count alone (2,048 frames) it would hold all 200
    # The live reader got all of it, and a reader from the start gets it from the store, then from the tail.
    decoder, events = Decoder(), []
    while len(events) < 200:
        chunk = live_reader.chunk()
        assert chunk is not None
        events += decoder.feed(chunk)
    assert _numbers(events) == list(range(1, 201))
    live.close()
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        _publish(srv.url, "t", 1, 10, start=201)  # not yet in anybody's tail
        with client.stream("GET", "/topics/t/events", headers={"last-event-id": "0"}) as resp:
            decoder, events = Decoder(), []
            for data in resp.iter_raw():
                events += decoder.feed(data)
                if len(events) >= 201:
                    break
    assert _numbers(events) == list(range(1, 202))


def test_the_tails_together_stay_under_their_total_largest_first(server: Server, tmp_path: Path) -> None:
    srv = server(*_sqlite(tmp_path), "--tail-bytes", "200000", "--tail-total-bytes", "300000")
    readers = [_open(srv.port, f"t{i}") for i in range(3)]
    for r in readers:
        Chunked(r)  # the subscription is held: its tail is loaded
    _publish(srv.url, "t0", 10, 1000)  # a small tail, which the trimming leaves alone
    for topic in ("t1", "t2"):
        _publish(srv.url, topic, 60, 2000)  # about 250 KB counted each: 500 KB together
    total = _metric(srv.url, "ssehub_tail_bytes")
    assert 0 < total <= 300_000, total
    for r in readers:
        r.close()


def test_a_replay_is_written_in_pages_bounded_in_bytes(server: Server, tmp_path: Path) -> None:
    srv = server(*_sqlite(tmp_path), "--page-bytes", "10000")
    _publish(srv.url, "t", 60, 3000)  # nobody listens: the replay comes from the store
    sock = _open(srv.port, "t", last_id=0)
    reader = Chunked(sock)
    decoder, events, sizes = Decoder(), [], []
    while len(events) < 60:
        chunk = reader.chunk()
        assert chunk is not None
        sizes.append(len(chunk))
        events += decoder.feed(chunk)
    sock.close()
    assert _numbers(events) == list(range(1, 61))
    # One page of 1,000 events used to be one write of 180 KB; now no write passes the bound.
    assert max(sizes) <= 10_000 + 100, sizes
    # A JSON page is bounded the same way; `next_after` says where the next one starts.
    page = httpx.get(f"{srv.url}/topics/t/events?after=0&limit=100", headers={"accept": "application/json"}).json()
    assert [e["id"] for e in page["events"]] == [1, 2, 3] and page["next_after"] == 3, page["next_after"]
    # The same bound for a reader far behind in the tail: a live reader keeps the topic's tail loaded.
    live = _open(srv.port, "u")
    Chunked(live)
    _publish(srv.url, "u", 30, 3000)
    _publish(srv.url, "u", 1, 30_000, start=31)  # an event larger than the bound still goes, alone
    sock = _open(srv.port, "u", last_id=0)
    reader = Chunked(sock)
    decoder, events, sizes = Decoder(), [], []
    while len(events) < 31:
        chunk = reader.chunk()
        assert chunk is not None
        sizes.append(len(chunk))
        events += decoder.feed(chunk)
    sock.close()
    live.close()
    assert _numbers(events) == list(range(1, 32))
    assert max(sizes[:-1]) <= 10_000 and 30_000 < sizes[-1] < 30_100, sizes


def test_a_stalled_reader_is_cut_and_resumes_with_everything_once(server: Server, tmp_path: Path) -> None:
    srv = server(*_sqlite(tmp_path), "--stall-timeout", "1.5", "--heartbeat", "2", "--page-bytes", "65536")
    # A reader with a small window that reads nothing: 300 events of 10 KB fill it, the server's
    # buffers too, and its write waits.
    stalled = _open(srv.port, "t", last_id=0, rcvbuf=4096)
    time.sleep(0.3)
    started = time.monotonic()
    _publish(srv.url, "t", 300, 10_000)
    publishing = time.monotonic() - started
    deadline = time.monotonic() + 30
    while _metric(srv.url, "ssehub_streams_stalled") < 1:
        assert time.monotonic() < deadline, "the stalled stream was not cut"
        time.sleep(0.2)
    # The connection was closed by the server: what it had written arrives, then the end.
    stalled.settimeout(30)
    reader = Chunked(stalled)
    decoder, events = Decoder(), []
    while (chunk := reader.chunk()) is not None:
        events += decoder.feed(chunk)
    stalled.close()
    got = _numbers(events)
    assert got == list(range(1, len(got) + 1)) and len(got) < 300, len(got)
    # It resumes from the last id it got, as EventSource does, and gets the rest, each once.
    resumed = _open(srv.port, "t", last_id=len(got))
    resumed.settimeout(30)
    reader = Chunked(resumed)
    rest: list[ServerSentEvent] = []
    decoder = Decoder()
    while len(got) + len(rest) < 300:
        chunk = reader.chunk()
        assert chunk is not None
        rest += decoder.feed(chunk)
    resumed.close()
    assert got + _numbers(rest) == list(range(1, 301))
    log = srv.output()
    assert f"events={len(got)} ended=stalled" in log, log[-2000:]  # the access log counts what was written
    assert "without completing response" not in log  # a cut is not the server's error
    # Publishing did not wait for the stalled reader: 300 publishes, far under the time it takes to be cut
    # many times over (a generous bound: the box is shared).
    assert publishing < 60, publishing


def test_a_stalled_reader_of_another_wire_format_is_cut_too(server: Server, tmp_path: Path) -> None:
    srv = server(*_sqlite(tmp_path), "--stall-timeout", "1.5", "--page-bytes", "65536")
    stalled = _open(srv.port, "t", rcvbuf=4096, query="?format=ag-ui&after=0")
    time.sleep(0.3)
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        for _ in range(300):
            r = client.post("/topics/t/events", json={"event": "text_delta", "data": {"content": "x" * 10_000}})
            assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while _metric(srv.url, "ssehub_streams_stalled") < 1:
        assert time.monotonic() < deadline, "the stalled stream was not cut"
        time.sleep(0.2)
    stalled.settimeout(30)
    reader = Chunked(stalled)
    while reader.chunk() is not None:
        pass  # what was written arrives, then the connection ends
    stalled.close()
    deadline = time.monotonic() + 5  # the access line is written a few milliseconds after its stream ends
    while "ended=stalled" not in srv.output():
        assert time.monotonic() < deadline, srv.output()[-2000:]
        time.sleep(0.05)


def test_publishing_runs_at_its_speed_while_readers_stall(server: Server, tmp_path: Path) -> None:
    srv = server(*_sqlite(tmp_path), "--stall-timeout", "60", "--page-bytes", "65536")
    _publish(srv.url, "warm", 20, 20_000)
    started = time.monotonic()
    _publish(srv.url, "alone", 100, 20_000)
    alone = time.monotonic() - started
    stalled = [_open(srv.port, "t", last_id=0, rcvbuf=4096) for _ in range(3)]
    time.sleep(0.3)
    started = time.monotonic()
    _publish(srv.url, "t", 100, 20_000)
    beside = time.monotonic() - started
    assert httpx.get(f"{srv.url}/topics/t").json()["subscribers"] == 3  # still held: not cut, just stalled
    for s in stalled:
        s.close()
    # Generous: the box is shared. A publisher that waited for its readers would not finish at all.
    assert beside < 5 * alone + 5, (alone, beside)


def test_no_silence_outlasts_the_heartbeat(server: Server, tmp_path: Path) -> None:
    heartbeat = 2.0
    srv = server(*_sqlite(tmp_path), "--heartbeat", str(heartbeat))
    sock = _open(srv.port, "t")
    sock.settimeout(10)
    reader = Chunked(sock)
    opening = reader.chunk()
    assert opening is not None and opening.startswith(b": ok"), opening
    # The worst silence follows an event that comes just after the hub's tick: publish at random moments
    # and time the gap from each event to the next keep-alive, and between keep-alives.
    gaps = []
    rng = random.Random(14)
    for n in range(5):
        time.sleep(rng.uniform(0, heartbeat / 2))
        _publish(srv.url, "t", 1, 10, start=n + 1)
        chunk = reader.chunk()
        while chunk == b": keep-alive\n\n":  # one that was due while this test slept
            chunk = reader.chunk()
        assert chunk is not None and b"data: " in chunk, chunk
        last = time.monotonic()
        for _ in range(2):
            chunk = reader.chunk()
            assert chunk == b": keep-alive\n\n", chunk
            now = time.monotonic()
            gaps.append(now - last)
            last = now
    sock.close()
    # The tick comes every quarter heartbeat (it used to come every half and let 1.5 heartbeats pass).
    assert max(gaps) <= heartbeat + 0.3, gaps
    assert min(gaps) >= heartbeat / 2, gaps  # and keep-alives do not come needlessly often


def test_the_retry_hint_that_ends_streams_on_shutdown_is_jittered(server: Server, tmp_path: Path) -> None:
    srv = server(*_sqlite(tmp_path), "--retry", "1000")
    socks = [_open(srv.port, "t") for _ in range(8)]
    readers = [Chunked(s) for s in socks]
    deadline = time.monotonic() + 10
    while _metric(srv.url, "ssehub_subscribers") < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    hints = []
    for s, reader in zip(socks, readers, strict=True):
        s.settimeout(15)
        body = b""
        while (chunk := reader.chunk()) is not None:
            body += chunk
        s.close()
        found = re.findall(rb"^retry: (\d+)$", body, re.M)
        assert len(found) == 2, body  # the opening's, then the one that ends the stream
        assert found[0] == b"1000"
        hints.append(int(found[1]))
    assert all(1000 <= h <= 2000 for h in hints), hints
    assert len(set(hints)) > 1, hints  # eight equal draws from 1,000 values: about one in 10^21
