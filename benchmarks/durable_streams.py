"""Durable Streams side by side: ssehub against the reference Node server (@durable-streams/server).

    .venv/bin/python benchmarks/durable_streams.py --start --rounds 3
    .venv/bin/python benchmarks/durable_streams.py --target ssehub=http://127.0.0.1:8000 --target ref=http://...

With --start it runs `ssehub serve` (the store of --store, memory:// by default) and the reference
server (in memory, tests/node/durable/reference-server.mjs) on free ports, and stops them at the end.
Each scenario runs on every target in turn, round after round (A/B interleaved), and the medians are
printed as a table (and as JSON with --json):

    appends/s      POSTs of 100 bytes: 1 stream with 50 in flight, and 500 streams with one each
    SSE latency    p50/p99 from the POST that appends to the frame arriving, 1, 100 and 1,000 readers
    catch-up       reading a stream of 5,000 appends of 4 KiB from the start, MB/s (text and binary)

Readers are raw sockets that look for each message's timestamp in the bytes they receive, so the
client costs little next to the servers: they share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "node" / "durable"
STAMP = re.compile(rb'"t":(\d+)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.head(f"{url}/v1/stream/__probe", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers at {url}")


@contextlib.contextmanager
def started(store: str) -> Iterator[dict[str, str]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        cmd = [sys.executable, "-m", "ssehub", "serve", "--port", str(port), "--store", store, "--log-level", "warning"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT))
        ref_port = free_port()
        ref = ["node", "reference-server.mjs", "--port", str(ref_port), "--long-poll-timeout-ms", "15000"]
        procs.append(subprocess.Popen(ref, cwd=HARNESS, stdout=subprocess.DEVNULL))
        targets = {"ssehub": f"http://127.0.0.1:{port}", "reference": f"http://127.0.0.1:{ref_port}"}
        for url in targets.values():
            wait_until_up(url)
        yield targets
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def stream_url(base: str, name: str) -> str:
    return f"{base}/v1/stream/bench-{name}-{uuid.uuid4().hex[:8]}"


async def create(client: httpx.AsyncClient, url: str, content_type: str = "application/json") -> None:
    response = await client.put(url, headers={"content-type": content_type})
    assert response.status_code in (200, 201), response.status_code


# -- appends -----------------------------------------------------------------------------------------------


async def raw_post(url: str, body: bytes, content_type: str, stop: float, count: int | None = None) -> int:
    """POST `body` to `url` over one keep-alive connection until `stop` (or `count` times); how many were
    answered 2xx.
    A raw socket rather than an HTTP library: the client must not be what is measured."""
    host, _, path = url.removeprefix("http://").partition("/")
    name, port = host.split(":")
    reader, writer = await asyncio.open_connection(name, int(port))
    request = (
        f"POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    done = 0
    try:
        while time.perf_counter() < stop and (count is None or done < count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 204")):
                raise RuntimeError(f"append answered {head[:40]!r}")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length and int(length[1]):
                await reader.readexactly(int(length[1]))
            done += 1
    finally:
        writer.close()
    return done


async def appends(base: str, streams: int, in_flight: int, seconds: float) -> float:
    async with httpx.AsyncClient(timeout=30) as client:
        urls = [stream_url(base, "append") for _ in range(streams)]
        for i in range(0, streams, 50):
            await asyncio.gather(*(create(client, u, "text/plain") for u in urls[i : i + 50]))
    stop = time.perf_counter() + seconds
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(raw_post(urls[i % streams], b"x" * 100, "text/plain", stop) for i in range(in_flight))
    )
    return sum(counts) / (time.perf_counter() - started)


# -- SSE latency -------------------------------------------------------------------------------------------


async def sse_reader(url: str, ready: asyncio.Event, arrivals: list[float], expected: int) -> None:
    host, _, rest = url.removeprefix("http://").partition("/")
    name, port = host.split(":")
    reader, writer = await asyncio.open_connection(name, int(port))
    writer.write(f"GET /{rest}?offset=now&live=sse HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    buffer = b""
    seen = 0
    try:
        while seen < expected:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.perf_counter_ns()
            if not ready.is_set() and b"control" in chunk:
                ready.set()
            buffer += chunk
            stamps = STAMP.findall(buffer)
            for stamp in stamps:
                arrivals.append((now - int(stamp)) / 1e6)
            seen += len(stamps)
            last = buffer.rfind(b'"t":')
            buffer = buffer[last:] if last >= 0 and not stamps else buffer[-16:]
    finally:
        writer.close()


async def sse_latency(base: str, readers: int, messages: int = 40, rate: float = 20.0) -> tuple[float, float]:
    url = stream_url(base, "sse")
    async with httpx.AsyncClient(timeout=30) as client:
        await create(client, url)
        arrivals: list[float] = []
        readies = [asyncio.Event() for _ in range(readers)]
        tasks = [asyncio.create_task(sse_reader(url, readies[i], arrivals, messages)) for i in range(readers)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        await asyncio.sleep(0.2)
        for _ in range(messages):
            body = json.dumps({"t": time.perf_counter_ns()})
            response = await client.post(url, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 204, response.status_code
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    arrivals.sort()
    if len(arrivals) < readers * messages * 0.99:
        raise RuntimeError(f"only {len(arrivals)} of {readers * messages} frames arrived")
    return arrivals[len(arrivals) // 2], arrivals[int(len(arrivals) * 0.99)]


# -- catch-up ----------------------------------------------------------------------------------------------


async def catch_up(base: str, content_type: str, appends_n: int = 5_000, size: int = 4096) -> float:
    url = stream_url(base, "catchup")
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await create(client, url, content_type)
        body = os.urandom(size) if content_type == "application/octet-stream" else b"x" * size
        forever = time.perf_counter() + 3600
        await asyncio.gather(*(raw_post(url, body, content_type, forever, appends_n // 25) for _ in range(25)))
        total = 0
        offset = "-1"
        started = time.perf_counter()
        while True:
            response = await client.get(url, params={"offset": offset})
            total += len(response.content)
            offset = response.headers["stream-next-offset"]
            if response.headers.get("stream-up-to-date") == "true":
                break
        elapsed = time.perf_counter() - started
    assert total == appends_n * size, (total, appends_n * size)
    return total / elapsed / 1e6


SCENARIOS: dict[str, Any] = {
    "appends/s, 1 stream (50 in flight)": lambda b: appends(b, 1, 50, 3.0),
    "appends/s, 500 streams": lambda b: appends(b, 500, 500, 3.0),
    "SSE p50/p99 ms, 1 reader": lambda b: sse_latency(b, 1),
    "SSE p50/p99 ms, 100 readers": lambda b: sse_latency(b, 100),
    "SSE p50/p99 ms, 1000 readers": lambda b: sse_latency(b, 1000),
    "catch-up MB/s, text (5k x 4 KiB)": lambda b: catch_up(b, "text/plain"),
    "catch-up MB/s, binary (5k x 4 KiB)": lambda b: catch_up(b, "application/octet-stream"),
}


def median(values: list[Any]) -> Any:
    if isinstance(values[0], tuple):
        return tuple(statistics.median(v[i] for v in values) for i in range(len(values[0])))
    return statistics.median(values)


async def run(targets: dict[str, str], rounds: int, only: list[str]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, list[Any]]] = {}
    for name, scenario in SCENARIOS.items():
        if only and not any(o in name for o in only):
            continue
        for r in range(rounds):
            order = list(targets.items()) if r % 2 == 0 else list(reversed(targets.items()))
            for target, base in order:
                value = await scenario(base)
                results.setdefault(name, {}).setdefault(target, []).append(value)
                print(f"  {name} [{target}] round {r + 1}: {value}", file=sys.stderr, flush=True)
    return {name: {t: median(v) for t, v in per.items()} for name, per in results.items()}


def show(value: Any) -> str:
    if isinstance(value, tuple):
        return " / ".join(f"{v:.1f}" for v in value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", action="store_true", help="start ssehub serve and the reference server")
    parser.add_argument("--store", default="memory://", help="ssehub's store with --start (default memory://)")
    parser.add_argument("--target", action="append", default=[], help="NAME=BASE_URL of a server to measure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], help="run the scenarios whose name has this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.ExitStack() as stack:
        targets = dict(t.split("=", 1) for t in args.target)
        if args.start:
            targets.update(stack.enter_context(started(args.store)))
        if not targets:
            parser.error("give --start or at least one --target")
        medians = asyncio.run(run(targets, args.rounds, args.only))
    if args.json:
        print(json.dumps(medians, indent=2))
        return
    names = list(targets)
    print(f"| scenario (median of {args.rounds}) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for scenario, per in medians.items():
        print(f"| {scenario} | " + " | ".join(show(per[n]) for n in names) + " |")


if __name__ == "__main__":
    main()
