"""HTTP limits below the app: what a connection may cost before a request reaches the hub.

uvicorn's httptools protocol, as `ssehub serve` runs it, caps nothing on its own: a request head
is buffered whatever its size (httptools grows a header value by concatenation until the line
ends), a client that sends its head a byte at a time, or nothing at all, is held open for ever,
and any number of connections is accepted. `LimitedHttpProtocol` adds, per connection:

- the request line and headers capped at `max_header_bytes`: a larger head gets 431, counted as it
  arrives, so no more than the cap plus one read (uvloop's 256 KiB) is ever held;
- `header_timeout`: the whole head must arrive within it from when the connection opens (or the next
  request begins), else 408. A deadline, not an idle timer, so a byte every few seconds does not help;
- `body_timeout`: at most that long between two pieces of a request body, else 408 (or a close,
  once the app has answered). Not counted while the app is not reading (the body is paused for it);
- a cap on the connections of the process (`max_connections`: 503) and of one client address
  (`max_connections_per_client`: 429, but never for `exempt` networks such as loopback, where a
  reverse proxy usually sits), both with Retry-After, answered at once and closed.

Every request's scope also gets the ASGI extension `ssehub.disconnect` (`ssehub.asgi.responses.DISCONNECT`): a response
that streams for as long as the client stays registers its task there, and the connection cancels it
when it is lost. An idle stream then needs no second task waiting for `http.disconnect`. The extension
also gives a stream a writer of its body (`"writer"`) that writes at once, as `send` would, from outside
its task: the hub's subscriptions write new events with it from the tail's wake, no task woken per event.

A request's answer is written through `_OneWrite`, which holds its status line and headers back until the
first bytes of its body: an answer written whole (a publish's JSON, a stream's opening) then goes out in one
write, one segment and one wake of the client, instead of two.

An app may also offer the connection a shortcut (`Shortcut`, as its attribute `shortcut`): for a request it
answers whole (a publish), the coroutine of that answer, which the connection runs in place of the ASGI cycle
and writes in one go, as uvicorn would have written the same answer from `send`. The hub's publish takes it:
an ASGI request costs about as much again as the hub's own work for a token.

The keep-alive timeout between requests is uvicorn's own (`timeout_keep_alive`). Each refusal is the
hub's JSON error (`{"error": {"code", "message"}}`) with `connection: close`; then the connection is
half-closed and what the client still sends is read and dropped for `linger` seconds, so that closing
does not reset the connection under the answer before the client has read it. Refusals are logged
at most once a second of each kind (with a count of those not logged), so a flood of them is not a
flood of log lines.

This subclasses uvicorn's internals (the parser callbacks and the cycle's fields); tests/
test_http_limits.py pins the uvicorn version and the attributes used, so an upgrade fails there
loudly rather than here quietly.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httptools
from starlette.types import Receive, Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from .asgi.responses import DISCONNECT, Answer

__all__ = ["Answer", "Census", "Limits", "LimitedHttpProtocol", "Shortcut", "limited_protocol", "parse_networks"]

log = logging.getLogger("ssehub.connections")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """`loopback`, `none`, or addresses and CIDR networks (as `--exempt-clients` checked them); none given:
    loopback."""
    if not values:
        return LOOPBACK
    networks: list[Network] = []
    for value in values:
        if value == "loopback":
            networks += LOOPBACK
        elif value != "none":
            networks.append(ipaddress.ip_network(value.strip("[]"), strict=False))
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class Limits:
    #: Bytes of request line and headers, together.
    max_header_bytes: int = 64 * 1024
    #: Seconds for a whole request head to arrive.
    header_timeout: float = 10.0
    #: Seconds between two pieces of a request body.
    body_timeout: float = 30.0
    #: Open connections of this process (0: no cap).
    max_connections: int = 10_000
    #: Open connections from one client address (0: no cap).
    max_connections_per_client: int = 1000
    #: Client networks the per-client cap does not apply to.
    exempt: tuple[Network, ...] = LOOPBACK
    #: The Retry-After of a refused connection, in seconds.
    retry_after: int = 5
    #: Seconds a refused connection is kept half-closed, so the client reads the answer.
    linger: float = 2.0


@dataclass
class Census:
    """The open connections of one process, in all and by client address (those under the per-client cap)."""

    total: int = 0
    by_client: Counter[str] = field(default_factory=Counter)
    #: For each kind of log line: when it was last written, and how many like it were not written since.
    said: dict[str, tuple[float, int]] = field(default_factory=dict)


class Shortcut(Protocol):
    """What an app offers as its attribute `shortcut`: given a request whose head has arrived, and the
    `receive` of its body, the coroutine of its whole answer, or None to leave the request to the app."""

    def __call__(self, scope: Scope, receive: Receive) -> Awaitable[Answer] | None: ...


def _shortcut_of(app: object) -> Shortcut | None:
    # uvicorn wraps the app in ProxyHeadersMiddleware (proxy_headers, on by default); any other wrapper (a
    # trace log's) is an app of its own, and every request goes through it.
    inner = app.app if isinstance(app, ProxyHeadersMiddleware) else app
    shortcut: Shortcut | None = getattr(inner, "shortcut", None)
    return shortcut


def _forwarded(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request carries what ProxyHeadersMiddleware reads (it would rewrite the client or scheme)."""
    for name, _ in headers:  # noqa: SIM110 (a loop, not any() over a generator: it runs once per request)
        if name == b"x-forwarded-for" or name == b"x-forwarded-proto":
            return True
    return False


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


def _client_key(host: str) -> str:
    """The address a client is counted under: an IPv4-mapped IPv6 address (a dual-stack socket's) as its IPv4 one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class _OneWrite:
    """The transport as a request's cycle sees it (uvicorn's cycle writes, closes and asks `is_closing`).

    uvicorn writes a response's head as soon as the app starts the answer, and its body with the next
    message: two sends for an answer the app gives in one go. The head is held here and goes out with the
    next write, or at the end of the loop's turn if no other write comes in it. Order is kept: a held
    head always goes first.
    """

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):  # uvicorn's one write of a head
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under `Limits`; one class per server (see `limited_protocol`)."""

    limits: ClassVar[Limits] = Limits()
    census: ClassVar[Census] = Census()

    # Slots, not the instance dict: uvicorn's protocol already has 28 attributes, and past 30 a dict no longer
    # shares its keys with the other instances', which costs every open connection about a kilobyte.
    __slots__ = (
        "_admitted",
        "_body_at",
        "_disconnect",
        "_extensions",
        "_head_parsed",
        "_head_read",
        "_in_head",
        "_refused",
        "_running",
        "_shortcut",
        "_timer",
        "_trusted",
        "_writes",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The `DISCONNECT` extension of this connection's requests.
        self._disconnect: dict[object, object] = {}
        self._extensions: dict[str, dict[object, object]] = {DISCONNECT: self._disconnect}
        self._disconnect["writer"] = self._body_writer
        #: The cycle whose task was started last: the one a writer asked for in a request's task belongs to.
        self._running: RequestResponseCycle | None = None
        #: Whether ProxyHeadersMiddleware reads this connection's X-Forwarded headers (None: not asked yet).
        self._trusted: bool | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: When the last piece of the request body came (loop time): what the body's timer counts from.
        self._body_at = 0.0
        #: Between the first byte of a request and the end of its headers.
        self._in_head = False
        #: Head bytes seen in the reads after the one the request began in, and as the parser reported them.
        self._head_read = 0
        self._head_parsed = 0
        #: Answered by us: whatever else arrives is dropped.
        self._refused = False
        #: The address this connection is counted under in the census, once admitted.
        self._admitted: str | None = None
        #: The app's shortcut, taken only when uvicorn's cycle would do nothing it does not (see `_start_asgi_task`).
        self._shortcut = _shortcut_of(self.app) if not (self.config.reset_contextvars or self.access_log) else None

    @property
    def refused(self) -> bool:
        """Answered by the limits (431, 408, 429, 503): whatever else arrives is dropped."""
        return self._refused

    # -- the connection --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        #: What each request's cycle writes to (see `_OneWrite`).
        self._writes: _OneWrite = _OneWrite(transport, self.loop)
        limits, census = self.limits, self.census
        host = self.client[0] if self.client else ""
        key = _client_key(host)
        if limits.max_connections and census.total >= limits.max_connections:
            self._say(
                logging.WARNING, "refused a connection from %s: %d open, the cap of this process", host, census.total
            )
            self._refuse(503, "too_many_connections", "the server has as many connections as it takes; retry later")
            return
        capped = limits.max_connections_per_client > 0 and not self._exempt(key)
        if capped and census.by_client[key] >= limits.max_connections_per_client:
            self._say(
                logging.WARNING,
                "refused a connection from %s: it has %d open, the cap per client",
                host,
                census.by_client[key],
            )
            self._refuse(
                429,
                "too_many_connections",
                f"this address has {census.by_client[key]} connections open, the most one client may; retry later",
            )
            return
        census.total += 1
        if capped:
            census.by_client[key] += 1
        self._admitted = key if capped else ""
        self._in_head = True  # the first request's time starts now, before its first byte
        self._arm(limits.header_timeout, self._head_timed_out)

    def _exempt(self, key: str) -> bool:
        try:
            address = ipaddress.ip_address(key)
        except ValueError:
            return False  # not an IP address (a Unix socket): counted under its name
        return any(address in network for network in self.limits.exempt)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        task = self._disconnect.get("task")
        if isinstance(task, asyncio.Task) and not task.done():
            self._disconnect["lost"] = True
            task.cancel()
        if self._admitted is not None:
            census = self.census
            census.total -= 1
            if self._admitted:
                census.by_client[self._admitted] -= 1
                if census.by_client[self._admitted] <= 0:
                    del census.by_client[self._admitted]
            self._admitted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped
        self._unset_keepalive_if_required()
        # Bytes of a head that began in an earlier read count whole; the read a head begins in may
        # end the request before it, so its bytes are left to the parser's count (checked at once).
        carried = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.refused:  # a callback answered and stopped the parser
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if carried and self._in_head and not self.refused:
            self._head_read += len(data)
            self._check_head()

    # -- the parser's callbacks --------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # One dict for all the requests of the connection (each response takes its task out when it ends).
        self.scope["extensions"] = self._extensions
        self._head_read = self._head_parsed = 0
        if not self._in_head or self._timer is None:
            self._in_head = True
            self._arm(self.limits.header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._head_parsed += len(url)
        self._check_head(raising=True)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_parsed += len(name) + len(value) + 4  # ": " and CRLF
        self._check_head(raising=True)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:
            cycle.transport = self._writes  # type: ignore[assignment]
            if not self.parser.should_upgrade():
                # Until on_message_complete: a request without a body completes in this same read.
                self._body_at = self.loop.time()
                self._arm(self.limits.body_timeout, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        # The piece's time, not a new timer per piece: the timer, when it fires, waits out what is left since
        # the last one (a cancel and a call_later per piece cost a streamed NDJSON body a tenth of the server).
        self._body_at = self.loop.time()
        if self._timer is None:
            self._arm(self.limits.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # -- the shortcut ------------------------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running = cycle
        shortcut = self._shortcut
        if shortcut is not None and app is self.app:  # not uvicorn's 503 of --limit-concurrency
            scope: Any = cycle.scope  # uvicorn's typed dicts, which Starlette's types do not name
            trusted = self._trusted
            if trusted is None:
                client = self.client[0] if self.client else None
                trusted = self._trusted = not isinstance(app, ProxyHeadersMiddleware) or client in app.trusted_hosts
            answer = None if trusted and _forwarded(scope["headers"]) else shortcut(scope, cycle.receive)  # type: ignore[arg-type]
            if answer is not None:
                task = self.loop.create_task(self._answer(cycle, answer))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
        super()._start_asgi_task(cycle, app)

    async def _answer(self, cycle: RequestResponseCycle, answer: Awaitable[Answer]) -> None:
        """Run a shortcut's answer and write it as uvicorn's cycle writes the same answer given to `send`."""
        try:
            status, headers, body = await answer
        except Exception as exc:
            cycle.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not cycle.response_started:
                await cycle.send_500_response()
            return
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if cycle.disconnected or cycle.response_started:
            return
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        content, closing = [STATUS_LINE[status]], False
        for name, value in (*cycle.default_headers, *headers):
            closing = closing or (name == b"connection" and b"close" in value.lower())
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive and not closing:
            content.append(b"connection: close\r\n")
        cycle.keep_alive = cycle.keep_alive and not closing
        content += (b"\r\n", body)
        self.transport.write(b"".join(content))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()

    # -- a stream's writes from outside its task ----------------------------------------------------------------

    def _body_writer(self) -> Callable[[bytes], bool]:
        """The `"writer"` of the DISCONNECT extension: called in a request's task, bound to that request's cycle
        (a pipelined request's cycle is started only once the one before it has ended)."""
        assert self._running is not None
        return functools.partial(self._write_body, self._running)

    def _write_body(self, cycle: RequestResponseCycle, data: bytes) -> bool:
        """Write `data` as a chunk of `cycle`'s body, as uvicorn's `send` of `http.response.body` would, if the
        socket takes it now; False (nothing written) for `send` to do it, waiting for the socket if need be."""
        if (
            not cycle.chunked_encoding  # a body of a given length: left to `send`, which counts it
            or not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or cycle.flow.write_paused
            or self.transport.is_closing()
        ):
            return False
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True

    # -- the limits --------------------------------------------------------------------------------------------

    def _check_head(self, raising: bool = False) -> None:
        cap = self.limits.max_header_bytes
        if max(self._head_read, self._head_parsed) <= cap:
            return
        host = self.client[0] if self.client else "?"
        self._say(
            logging.WARNING, "refused a request from %s: its request line and headers are above %d bytes", host, cap
        )
        self._refuse(431, "headers_too_large", f"the request line and headers are above {cap} bytes")
        if raising:
            raise _Refused

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # The next request began while this connection still answers one: its time starts after.
            self._arm(self.limits.header_timeout, self._head_timed_out)
            return
        host = self.client[0] if self.client else "?"
        seconds = self.limits.header_timeout
        self._say(logging.INFO, "closed a connection from %s: no complete request head within %gs", host, seconds)
        self._refuse(408, "request_timeout", f"the request line and headers did not arrive within {seconds:g}s")

    def _body_timed_out(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete:
            return
        left = self._body_at + self.limits.body_timeout - self.loop.time()
        if left > 0:  # a piece came since the timer was set
            self._arm(left, self._body_timed_out)
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The app is behind, not the client (or has not asked for the body yet): nothing to hold against it.
            self._arm(self.limits.body_timeout, self._body_timed_out)
            return
        host = self.client[0] if self.client else "?"
        seconds = self.limits.body_timeout
        self._say(logging.INFO, "closed a connection from %s: its request body stalled for %gs", host, seconds)
        self._refuse(408, "request_timeout", f"the request body stalled for {seconds:g}s")

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` with the hub's JSON error and close; whatever the client still sends is dropped."""
        self._refused = True
        self._in_head = False
        self._disarm()
        self._unset_keepalive_if_required()
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                transport.close()  # in the middle of another answer: there is no room for this one
                return
            # The app has a request and no answer yet: it sees the client gone, and sends nothing more.
            cycle.disconnected = True
            cycle.message_event.set()
        body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
        head = [STATUS_LINE[status], b"content-type: application/json\r\n"]
        head.append(b"content-length: %d\r\n" % len(body))
        if status in (429, 503):
            head.append(b"retry-after: %d\r\n" % self.limits.retry_after)
        head.append(b"connection: close\r\n\r\n")
        transport.write(b"".join([*head, body]))
        self.flow.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self._arm(self.limits.linger, transport.close)
        else:
            transport.close()

    def _say(self, level: int, message: str, *args: object) -> None:
        """Log a refusal: at most one line a second of each kind, so a flood of them is not a flood of lines."""
        now, said = self.loop.time(), self.census.said
        last, skipped = said.get(message, (float("-inf"), 0))
        if now - last < 1.0:
            said[message] = (last, skipped + 1)
            return
        said[message] = (now, 0)
        if skipped:
            message, args = message + " (and %d more like it since the last such line)", (*args, skipped)
        log.log(level, message, *args)

    def _arm(self, seconds: float, handler: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def limited_protocol(limits: Limits) -> type[LimitedHttpProtocol]:
    """A protocol class for one server (`uvicorn.Config(http=...)`), with its own census."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits, "census": Census()})
