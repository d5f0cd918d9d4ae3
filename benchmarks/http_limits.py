"""What slow and greedy clients cost a hub, before and after the HTTP limits (ssehub.connections).

    .venv/bin/python benchmarks/http_limits.py [--connections 3000] [--seconds 15] [--huge-mb 512]

Two servers of the same hub on loopback, each with `--store memory://`:

- before: the hub's app on uvicorn's own httptools protocol (`uvicorn --http httptools`), which is what
  `ssehub serve` ran before the limits;
- after: `ssehub serve`, with its defaults (64 KiB of head, 10 s to send it, ...).

Against each, two bounded attacks from this process, one after the other:

- slowloris: `--connections` connections, each sending its request head one byte a second for
  `--seconds`; printed: the server's RSS (at the start and its peak), and how many connections the
  server still held at the end, and how many it had answered 408;
- one header without end: one connection sends a header value in 64 KiB writes, up to `--huge-mb`
  or 20 s; printed: how much the server took before it answered or closed, and its peak RSS.

The figures vary with the machine; no threshold is asserted here (tests/test_http_limits.py does that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ssehub.options import resolve

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ)
    if kind == "before":
        env["SSEHUB_SERVE_OPTIONS"] = json.dumps(resolve({"store": "memory://", "access-log": "false"}, {}).as_dict())
        cmd = [sys.executable, "-m", "uvicorn", "ssehub.server:app_from_env", "--factory", "--http", "httptools"]
        cmd += ["--loop", "uvloop", "--port", str(port), "--log-level", "warning", "--backlog", "4096"]
    else:
        cmd = [sys.executable, "-m", "ssehub", "serve", "--store", "memory://", "--port", str(port)]
        cmd += ["--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the {kind} server did not start")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def slowloris(port: int, pid: int, connections: int, seconds: float) -> dict[str, float]:
    start_rss, peak = rss_mib(pid), 0.0
    writers: list[asyncio.StreamWriter] = []
    answers: list[bytes | None] = []
    closed = 0

    async def watch(reader: asyncio.StreamReader, index: int) -> None:
        nonlocal closed
        data = await reader.read(200)
        answers[index] = data
        with_eof = data == b"" or await reader.read() == b""
        closed += with_eof

    tasks = []
    for i in range(connections):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            break
        writers.append(writer)
        answers.append(None)
        tasks.append(asyncio.create_task(watch(reader, i)))
    began = time.monotonic()
    step = 0
    while time.monotonic() - began < seconds:
        for w in writers:
            if not w.is_closing() and step < len(HEAD) - 4:  # never the end of the head
                w.write(HEAD[step : step + 1])
        step += 1
        peak = max(peak, rss_mib(pid))
        await asyncio.sleep(1)
    await asyncio.sleep(0.5)
    held = sum(1 for a in answers if a is None)
    answered_408 = sum(1 for a in answers if a and a.startswith(b"HTTP/1.1 408"))
    for w in writers:
        w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "opened": len(writers),
        "held_at_end": held,
        "answered_408": answered_408,
        "rss_start_mib": round(start_rss, 1),
        "rss_peak_mib": round(peak, 1),
    }


def huge_header(port: int, pid: int, megabytes: int) -> dict[str, float | str]:
    peak, sent = rss_mib(pid), 0
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    answer = b""
    began = time.monotonic()
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
        piece = b"h" * 65536
        while sent < megabytes * 1024 * 1024 and time.monotonic() - began < 20:
            s.sendall(piece)
            sent += len(piece)
            if sent % (4 * 1024 * 1024) == 0:
                peak = max(peak, rss_mib(pid))
            if select.select([s], [], [], 0)[0]:  # an answer, or the close
                answer = s.recv(200) or b"(closed)"
                break
    except OSError:
        pass
    peak = max(peak, rss_mib(pid))
    s.close()
    return {
        "sent_before_answer_mib": round(sent / 1024 / 1024, 2),
        "answer": (answer.split(b"\r\n", 1)[0] or b"(none)").decode("latin-1"),
        "rss_peak_mib": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--huge-mb", type=int, default=512)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this client opens as many as the server holds
    results = {}
    for kind in ("before", "after"):
        proc, port = start(kind)
        try:
            results[kind] = {
                "slowloris": asyncio.run(slowloris(port, proc.pid, args.connections, args.seconds)),
                "huge_header": huge_header(port, proc.pid, args.huge_mb),
            }
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(kind, json.dumps(results[kind]), flush=True)


if __name__ == "__main__":
    main()
