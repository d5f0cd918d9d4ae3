"""HTTP limits (ssehub.connections) on a real `ssehub serve`, over raw sockets: what a client may cost
before its request reaches the hub."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import select
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest
import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http import httptools_impl

from ssehub import Hub
from ssehub.asgi import create_app
from ssehub.asgi.responses import Answer
from ssehub.config import HubConfig
from ssehub.connections import LimitedHttpProtocol, Limits, _OneWrite, limited_protocol
from support import ServerProcess, redis_prefix

Start = Callable[..., ServerProcess]

GET = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def connect(node: ServerProcess, timeout: float = 20) -> socket.socket:
    """A raw connection to `node`, closed after the test."""
    s = socket.create_connection(("127.0.0.1", node.port), timeout=timeout)
    _opened.append(s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_to_end(s: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as the close)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def error_code(body: bytes) -> str:
    code: str = json.loads(body)["error"]["code"]
    return code


def rss_kib(node: ServerProcess) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def hub(server: Start) -> Iterator[Callable[..., ServerProcess]]:
    yield lambda *args: server("--store", "memory://", *args)


def test_the_uvicorn_internals_it_builds_on_are_the_ones_it_was_written_for() -> None:
    """ssehub.connections subclasses uvicorn's httptools protocol and reads its request cycle's fields:
    a uvicorn or httptools upgrade must be checked against it (then this pin moves)."""
    assert uvicorn.__version__ == "0.55.0"
    assert httptools.__version__ == "0.9.0"
    protocol = httptools_impl.HttpToolsProtocol
    for name in (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "send_400_response",
        "handle_websocket_upgrade",
        "_should_upgrade",
        "_unsupported_upgrade_warning",
        "_unset_keepalive_if_required",
    ):
        assert callable(getattr(protocol, name)), name
    init = inspect.getsource(protocol.__init__)
    for attr in ("self.parser", "self.cycle", "self.flow", "self.client", "self.loop", "self.transport"):
        assert f"{attr} =" in init or f"{attr}: " in init, attr
    cycle = inspect.getsource(httptools_impl.RequestResponseCycle.__init__)
    for attr in ("disconnected", "more_body", "response_started", "response_complete", "waiting_for_100_continue"):
        assert f"self.{attr} =" in cycle, attr
    assert "self.message_event = message_event" in cycle
    assert "self.read_paused" in inspect.getsource(httptools_impl.FlowControl.__init__)
    # The shortcut (LimitedHttpProtocol._answer) starts in place of uvicorn's task and writes as its `send` does.
    assert "self._start_asgi_task(self.cycle, app)" in inspect.getsource(protocol.on_headers_complete)
    assert "self._start_asgi_task(cycle, app)" in inspect.getsource(protocol.on_response_complete)
    for attr in ("default_headers", "keep_alive", "flow", "logger", "on_response"):
        assert f"self.{attr} = " in cycle, attr
    for attr in ("self.access_log = ", "self.config = ", "self.app = ", "self.tasks = "):
        assert attr in init, attr
    assert "self.trusted_hosts = " in inspect.getsource(ProxyHeadersMiddleware.__init__)
    # A stream's writer (LimitedHttpProtocol._write_body) frames a body chunk as the cycle's `send` does.
    assert "self.chunked_encoding: bool | None = None" in cycle
    send = inspect.getsource(httptools_impl.RequestResponseCycle.send)
    assert 'content = [b"%x\\r\\n" % len(body), body, b"\\r\\n"]' in send
    assert "if self.flow.write_paused and not self.disconnected:" in send
    # The body of uvicorn's data_received is what LimitedHttpProtocol.data_received repeats around its count.
    source = inspect.getsource(protocol.data_received)
    assert "self.parser.feed_data(data)" in source and "self.send_400_response(msg)" in source
    assert httptools_impl.STATUS_LINE[431].startswith(b"HTTP/1.1 431 ")
    assert issubclass(LimitedHttpProtocol, protocol)
    # A cycle's transport is what ssehub.connections._OneWrite offers; a head is written whole, in one write.
    cycle_source = inspect.getsource(httptools_impl.RequestResponseCycle)
    assert set(re.findall(r"self\.transport\.(\w+)", cycle_source)) == {"write", "close", "is_closing"}
    assert "transport=self.transport" in inspect.getsource(protocol.on_headers_complete)
    assert 'content.append(b"\\r\\n")\n            self.transport.write(b"".join(content))' in cycle_source
    # The scope a request gets is made in on_message_begin, without extensions of uvicorn's own.
    begin = inspect.getsource(protocol.on_message_begin)
    assert "self.scope = {" in begin and "extensions" not in begin
    # The slots keep the instance dict at uvicorn's own attributes, which still share their keys (at most 30).
    assert not set(LimitedHttpProtocol.__slots__) & set(re.findall(r"self\.(\w+)", init))


def test_a_head_above_the_cap_gets_431_and_one_below_it_passes(hub: Start) -> None:
    node = hub("--max-header-bytes", "8192")
    s = connect(node)
    s.sendall(GET + b"X-Pad: " + b"a" * 7000 + b"\r\n\r\n")
    status, _, _ = answer(s.recv(65536))
    assert status == 200
    s.close()

    s = connect(node)
    s.sendall(GET + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n")
    status, headers, body = answer(read_to_end(s))
    assert status == 431 and headers["connection"] == "close"
    assert error_code(body) == "headers_too_large"
    # Many small headers count together, the request line too.
    s = connect(node)
    s.sendall(GET + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(100)) + b"\r\n")
    assert answer(read_to_end(s))[0] == 431
    s = connect(node)
    s.sendall(b"GET /healthz?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer(read_to_end(s))[0] == 431
    # The server goes on answering.
    s = connect(node)
    s.sendall(GET + b"\r\n")
    assert answer(s.recv(65536))[0] == 200


def test_a_header_without_end_is_cut_off_without_buffering_it(hub: Start) -> None:
    """Before: a 524 MB header was read whole into memory. Now the connection is answered and closed once the
    head passes the cap (64 KiB), and the server's memory does not follow what the client sends."""
    node = hub()
    before = rss_kib(node)
    s = connect(node)
    s.sendall(GET + b"X-Huge: ")
    piece = b"a" * 65536
    sent, got = 0, b""
    try:
        while sent < 100 * 1024 * 1024 and not got:
            s.sendall(piece)
            sent += len(piece)
            if select.select([s], [], [], 0)[0]:  # an answer, or the close
                got = s.recv(65536) or b"closed"
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = got or read_to_end(s)
    assert answer(got)[0] == 431
    assert sent < 4 * 1024 * 1024, f"the answer came after {sent} bytes of one header"
    assert rss_kib(node) - before < 30 * 1024
    s.close()
    s = connect(node)
    s.sendall(GET + b"\r\n")
    assert answer(s.recv(65536))[0] == 200


def test_slow_heads_are_answered_408_and_closed_after_the_header_timeout(hub: Start) -> None:
    node = hub("--header-timeout", "2")
    quiet = [connect(node) for _ in range(20)]  # send nothing at all
    slow = [connect(node) for _ in range(20)]  # a byte at a time, as slowloris does
    start = time.monotonic()
    request = GET + b"X-Slow: 1\r\n\r\n"
    closed: set[int] = set()
    for i in range(len(request)):
        for n, s in enumerate(slow):
            if n in closed:
                continue
            try:
                s.sendall(request[i : i + 1])
            except OSError:
                closed.add(n)
        if len(closed) == len(slow) or time.monotonic() - start > 30:
            break
        time.sleep(0.5)
    for s in quiet + slow:
        raw = read_to_end(s)
        assert raw == b"" or answer(raw)[0] == 408, raw[:200]
        s.close()
    assert time.monotonic() - start < 30
    status, _, body = answer(read_to_end(connect(node)))
    assert status == 408 and error_code(body) == "request_timeout"


def test_a_stalled_body_is_answered_408(hub: Start) -> None:
    node = hub("--body-timeout", "1.5")
    s = connect(node)
    s.sendall(
        b"POST /topics/t/events HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    start = time.monotonic()
    status, _, body = answer(read_to_end(s))
    assert status == 408 and error_code(body) == "request_timeout"
    assert 1.0 < time.monotonic() - start < 20
    # Nothing was published.
    s = connect(node)
    s.sendall(b"GET /topics/t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer(s.recv(65536))[0] == 404


def test_a_body_that_keeps_coming_is_not_cut_off(hub: Start) -> None:
    node = hub("--body-timeout", "1")
    s = connect(node)
    body = json.dumps({"data": "x" * 40}).encode()
    s.sendall(
        b"POST /topics/t/events HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    for i in range(0, len(body), 10):
        time.sleep(0.3)  # 3 s in all, each piece well within the timeout
        s.sendall(body[i : i + 10])
    assert answer(s.recv(65536))[0] == 200


def test_a_body_that_stops_coming_is_cut_off_a_timeout_after_its_last_piece(hub: Start) -> None:
    node = hub("--body-timeout", "1")
    s = connect(node)
    s.sendall(
        b"POST /topics/t/events HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/x-ndjson\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    for i in range(4):
        time.sleep(0.4)  # past the first timeout in all, each piece within it
        line = json.dumps({"event": "n", "data": i}).encode() + b"\n"
        s.sendall(b"%x\r\n%s\r\n" % (len(line), line))
    last = time.monotonic()
    status, _, got = answer(read_to_end(s))
    assert status == 408 and error_code(got) == "request_timeout"
    assert 0.9 < time.monotonic() - last < 5
    # The lines that came before the stall stay appended.
    assert httpx.get(f"{node.url}/topics/t").json()["last_id"] == 4


def test_an_idle_keep_alive_connection_is_closed(hub: Start) -> None:
    node = hub("--keep-alive-timeout", "1")
    s = connect(node)
    s.sendall(GET + b"\r\n")
    start = time.monotonic()
    raw = read_to_end(s)
    assert answer(raw)[0] == 200
    assert 0.5 < time.monotonic() - start < 15


def test_connections_above_the_process_cap_get_503_with_retry_after(hub: Start) -> None:
    node = hub("--max-connections", "5", "--header-timeout", "60")
    held = [connect(node) for _ in range(5)]
    time.sleep(0.5)
    s = connect(node)
    status, headers, body = answer(read_to_end(s))
    assert status == 503 and int(headers["retry-after"]) > 0 and headers["connection"] == "close"
    assert error_code(body) == "too_many_connections"
    # A client that sends its request anyway reads the same answer.
    s = connect(node)
    s.sendall(GET + b"\r\n")
    assert answer(read_to_end(s))[0] == 503
    for h in held:
        h.close()
    time.sleep(0.5)
    s = connect(node)
    s.sendall(GET + b"\r\n")
    assert answer(s.recv(65536))[0] == 200  # the closed ones were counted out


def test_connections_above_the_cap_per_client_get_429_with_retry_after(hub: Start) -> None:
    node = hub("--max-connections-per-client", "3", "--exempt-clients", "none", "--header-timeout", "60")
    held = [connect(node) for _ in range(3)]
    time.sleep(0.5)
    status, headers, body = answer(read_to_end(connect(node)))
    assert status == 429 and int(headers["retry-after"]) > 0
    assert error_code(body) == "too_many_connections"
    held.pop().close()
    time.sleep(0.5)
    s = connect(node)
    s.sendall(GET + b"\r\n")
    assert answer(s.recv(65536))[0] == 200


def test_loopback_is_exempt_from_the_cap_per_client_by_default(hub: Start) -> None:
    node = hub("--max-connections-per-client", "2", "--header-timeout", "60")
    held = [connect(node) for _ in range(4)]
    for s in held:
        s.sendall(GET + b"\r\n")
        assert answer(s.recv(65536))[0] == 200


def test_bad_limits_are_refused_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", "--exempt-clients", "10.0.0.0/33"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr
    assert "--exempt-clients: must be loopback, none, an address or a network" in done.stderr


def test_every_worker_of_workers_n_enforces_the_limits(server: Start, redis_url: str) -> None:
    with redis_prefix(redis_url) as prefix:
        node = server("--store", f"{redis_url}?prefix={prefix}", "--workers", "2", "--max-header-bytes", "4096")
        for _ in range(6):  # the kernel spreads the connections over both workers
            s = connect(node)
            s.sendall(GET + b"X-Pad: " + b"a" * 5000 + b"\r\n\r\n")
            assert answer(read_to_end(s))[0] == 431
            s = connect(node)
            s.sendall(GET + b"\r\n")
            assert answer(s.recv(65536))[0] == 200


def test_a_client_is_counted_under_its_ipv4_address_on_a_dual_stack_socket() -> None:
    from ssehub.connections import LOOPBACK, _client_key, parse_networks

    assert _client_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert _client_key("2001:db8::1") == "2001:db8::1"
    assert _client_key("/run/ssehub.sock") == "/run/ssehub.sock"
    assert parse_networks([]) == LOOPBACK == parse_networks(["loopback"])
    assert parse_networks(["none"]) == ()
    assert [str(n) for n in parse_networks(["10.0.0.0/8", "192.168.1.7", "[::1]"])] == [
        "10.0.0.0/8",
        "192.168.1.7/32",
        "::1/128",
    ]


def test_an_idle_stream_whose_client_hangs_up_is_let_go_at_once(hub: Start) -> None:
    """Under `ssehub serve` an idle stream has no task watching for the disconnect: the connection cancels the
    stream's own task when it is lost. The subscription is released, and the access line says `ended=client`."""
    node = hub()
    assert httpx.post(f"{node.url}/topics/idle/events", content=b"first").status_code == 200
    streams = [connect(node, timeout=5) for _ in range(20)]
    for s in streams:
        s.sendall(b"GET /topics/idle/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    for s in streams:
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert httpx.get(f"{node.url}/topics/idle").json()["subscribers"] == 20
    for s in streams[:15]:
        s.close()
    deadline = time.monotonic() + 2  # well within the heartbeat, whose write would find the socket gone anyway
    while httpx.get(f"{node.url}/topics/idle").json()["subscribers"] != 5:
        assert time.monotonic() < deadline, "the streams of the clients that left were not let go"
        time.sleep(0.05)
    # The access lines are written a few milliseconds after their streams end (in batches: ssehub.logs).
    lines: list[str] = []
    while len(lines) < 15 and time.monotonic() < deadline + 2:
        time.sleep(0.05)
        lines = [line for line in node.output().splitlines() if "method=GET path=/topics/idle/events" in line]
    assert len(lines) == 15 and all("status=200" in line and "ended=client" in line for line in lines), lines
    # The others still stream: an event reaches them.
    assert httpx.post(f"{node.url}/topics/idle/events", content=b"still here").status_code == 200
    for s in streams[15:]:
        got = b""
        while b"still here" not in got:
            got += s.recv(65536)


async def test_an_answer_given_in_one_go_is_written_in_one_write() -> None:
    """uvicorn writes a head when the answer starts and the body with the next message; `_OneWrite` joins them.
    A head that nothing follows in the same turn of the loop still goes out, and order is always kept."""

    class Transport:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def close(self) -> None:
            self.closed = True

        def is_closing(self) -> bool:
            return self.closed

    transport = Transport()
    writes = _OneWrite(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
    writes.write(head)
    writes.write(b"{}")
    assert transport.writes == [head + b"{}"]
    writes.write(head)  # a stream's head, its body not yet there
    assert transport.writes == [head + b"{}"]
    await asyncio.sleep(0)
    assert transport.writes == [head + b"{}", head]
    writes.write(b"5\r\nhello\r\n")  # a body chunk goes out at once
    writes.write(head)
    writes.close()  # a held head goes out before the close
    assert transport.writes[2:] == [b"5\r\nhello\r\n", head] and transport.closed


class Shortcutting:
    """An app that offers a shortcut for `POST /fast` (its answer `fast:<body>`) and `/boom` (which raises), and
    answers every other request itself (`slow:<body>`)."""

    def shortcut(self, scope: Any, receive: Any) -> Coroutine[Any, Any, Answer] | None:
        if scope["method"] == "POST" and scope["path"] in ("/fast", "/boom"):
            return self._answer(scope, receive)
        return None

    async def _answer(self, scope: Any, receive: Any) -> Answer:
        body = await self._body(receive)
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        return 200, [(b"content-length", b"%d" % (len(body) + 5))], b"fast:" + body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b"slow:" + await self._body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _body(receive: Any) -> bytes:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                return body


@contextlib.asynccontextmanager
async def serving(app: Any, lifespan: str = "off") -> AsyncIterator[int]:
    """uvicorn serving `app` in this process over LimitedHttpProtocol, as `ssehub serve` runs it: its port."""
    config = uvicorn.Config(
        app,
        port=0,
        http=limited_protocol(Limits()),
        lifespan=lifespan,
        log_config=None,
        ws="none",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def shortcutting() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to uvicorn serving `Shortcutting` over LimitedHttpProtocol."""
    async with serving(Shortcutting()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            yield reader, writer
        finally:
            writer.close()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status, headers, _ = answer(await reader.readuntil(b"\r\n\r\n"))
    return status, headers, await reader.readexactly(int(headers["content-length"]))


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_a_shortcut_answers_in_order_among_pipelined_requests(shortcutting: Any) -> None:
    reader, writer = shortcutting
    writer.write(post("/fast", b"a") + post("/other", b"b") + post("/fast", b"c") + post("/fast", b"d"))
    bodies = []
    for _ in range(4):
        status, headers, body = await read_answer(reader)
        assert status == 200 and {"date", "server"} <= set(headers) and "connection" not in headers
        bodies.append(body)
    assert bodies == [b"fast:a", b"slow:b", b"fast:c", b"fast:d"]


async def test_a_shortcut_keeps_to_connection_close_and_http_1_0(shortcutting: Any) -> None:
    reader, writer = shortcutting
    writer.write(post("/fast", b"x", "Connection: close"))
    status, headers, body = await read_answer(reader)
    assert (status, headers["connection"], body) == (200, "close", b"fast:x")
    assert await reader.read() == b""  # closed after the answer


async def test_a_shortcut_answers_expect_100_continue(shortcutting: Any) -> None:
    reader, writer = shortcutting
    head = post("/fast", b"", "Expect: 100-continue").replace(b"Content-Length: 0", b"Content-Length: 4")
    writer.write(head)
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"body")
    assert (await read_answer(reader))[2] == b"fast:body"


async def test_a_shortcut_that_raises_is_a_500_and_a_forwarded_request_is_left_to_the_app(shortcutting: Any) -> None:
    reader, writer = shortcutting
    # From a trusted proxy (loopback), uvicorn's ProxyHeadersMiddleware must see the request: no shortcut.
    writer.write(post("/fast", b"p", "X-Forwarded-For: 203.0.113.9"))
    assert (await read_answer(reader))[2] == b"slow:p"
    writer.write(post("/boom", b"z"))
    status, headers, body = await read_answer(reader)
    assert (status, headers["connection"], body) == (500, "close", b"Internal Server Error")


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body."""
    size = int(await reader.readuntil(b"\r\n"), 16)
    chunk = await reader.readexactly(size + 2)
    return chunk[:-2]


async def test_a_streams_events_are_written_from_the_tails_wake_in_order_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under LimitedHttpProtocol a waiting stream's new events are written by the tail's wake itself
    (`Subscription.take`, through the connection's writer), not by a task woken per event; once the reader's
    socket is full, by the stream's task, which waits for it, as before. Either way every event arrives once,
    in order, and the access log counts every byte."""
    caplog.set_level(logging.INFO, "ssehub.access")
    hub = Hub("memory://", HubConfig(page_bytes=4096))
    async with hub, serving(create_app(hub, access_log=True)) as port:
        try:
            client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # full soon, once it stops reading
            sock.connect(("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"GET /topics/t/events?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head
            received = [await read_chunk(reader)]  # the opening
            while not hub._subscriptions:
                await asyncio.sleep(0.01)
            (fast,) = hub._subscriptions
            for i in range(1, 31):
                assert (await client.post("/topics/t/events", content=b"token %d" % i)).json() == {"ids": [i]}
                received.append(await read_chunk(reader))
            assert fast.events_sent == 30 and fast.direct_bytes == len(b"".join(received[1:])), "written by the wake"
            # A batch of more than a chunk's `page_bytes`: written in as many chunks, in the same wake, not the
            # rest at the next heartbeat tick.
            batch = [{"event": "message", "data": "y" * 1000} for _ in range(20)]
            assert (await client.post("/topics/t/events", json=batch)).json() == {"ids": list(range(31, 51))}
            async with asyncio.timeout(2):  # well within a tick (a quarter of the 15 s heartbeat)
                while fast.events_sent < 50 or b"id: 50\n" not in b"".join(received):
                    received.append(await read_chunk(reader))
            assert fast.direct_bytes == len(b"".join(received[1:]))

            # The reader stops reading: its socket fills, and the stream's task takes over, waiting for the socket.
            published = 50
            while not fast.writing:
                published += 1
                assert published < 1000, "the socket never filled"
                await client.post("/topics/t/events", content=b"x" * 100_000)
            await client.post("/topics/t/close")
            while chunk := await read_chunk(reader):
                received.append(chunk)
            body = b"".join(received)
            ids = [int(i) for i in re.findall(rb"^id: (\d+)$", body, re.MULTILINE)]
            assert ids == list(range(1, published + 1))
            writer.close()
            await client.aclose()
            while not [r for r in caplog.records if "method=GET" in r.getMessage()]:
                await asyncio.sleep(0.01)
        finally:
            hub.drain()  # else the server's shutdown waits for the streams still open
    (line,) = [r.getMessage() for r in caplog.records if "method=GET" in r.getMessage()]
    assert f"bytes={len(body)} " in line and f"events={published} " in line, line
