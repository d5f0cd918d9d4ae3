"""Compacted replay for late joiners: frames, bytes and time to the first complete paint, per wire format.

    .venv/bin/python benchmarks/compaction.py [--tokens 10000] [--repeat 7]

Starts `ssehub serve` with its defaults (one process, the SQLite store) on a free port, writes an
answer of N tokens to a topic (one `text_delta` per word, then `done`; the topic closes), and reads
it late, from its start, in each format with `?compact=1` and `?compact=0`:

- frames and bytes: what the server sends;
- paint, Python: from sending the request until a reader holds the whole text (httpx, ssehub's own
  SSE decoder, a JSON parse per frame): the server's share of a late join;
- paint, client: the same with the packages a front end uses (tests/node/formats/paint.mjs: `ai`'s
  parser and readUIMessageStream, as useChat reads; @ag-ui/client's HttpAgent), needs scripts/node-deps.

Every figure is the median of `--repeat` reads; the readings take turns, so that a change in the
load of a shared machine touches them alike. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from ssehub.sse import Decoder

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node" / "formats"
TOPIC = "bench/answer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cmd = [sys.executable, "-m", "ssehub", "serve", "--port", str(port), "--store", f"sqlite:///{tmp}/bench.db"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(15)


def words(n: int) -> list[str]:
    return [f"{'' if i == 0 else ' '}word{i % 97}" for i in range(n)]


def write_answer(url: str, tokens: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(0, len(tokens), 1000):
            batch = [{"event": "text_delta", "data": {"content": t}} for t in tokens[i : i + 1000]]
            c.post(f"/topics/{TOPIC}/events", json=batch).raise_for_status()
        c.post(f"/topics/{TOPIC}/events", json={"event": "done", "data": {"result": None}}).raise_for_status()
        c.post(f"/topics/{TOPIC}/close", json={"status": "completed"}).raise_for_status()


def text_in(format: str, data: str) -> str:
    """The answer's text a frame carries, as a reader of `format` finds it."""
    if data == "[DONE]":
        return ""
    value = json.loads(data)
    if format == "native":
        return str(value.get("content", "")) if isinstance(value, dict) else ""
    if value.get("type") in ("text-delta", "TEXT_MESSAGE_CONTENT"):
        return str(value["delta"])
    return ""


def read_late(client: httpx.Client, url: str, format: str, length: int) -> tuple[int, int, float]:
    """Frames, bytes, and seconds until the reader held the whole text."""
    frames = size = got = 0
    painted = 0.0
    start = time.perf_counter()
    decoder = Decoder()
    with client.stream("GET", url, headers={"accept": "text/event-stream"}) as response:
        for chunk in response.iter_raw():
            size += len(chunk)
            for event in decoder.feed(chunk):
                frames += 1
                got += len(text_in(format, event.data))
                if not painted and got >= length:
                    painted = time.perf_counter() - start
    return frames, size, painted


def client_paint(format: str, length: int, repeat: int, urls: list[str]) -> list[float | None]:
    """Median milliseconds to the first complete paint with the real client packages, per URL (None: no Node)."""
    if format == "native" or not shutil.which("node") or not (NODE_DIR / "node_modules" / "ai").exists():
        return [None] * len(urls)
    out = subprocess.run(
        ["node", "paint.mjs", format, str(length), str(repeat), *urls],
        cwd=NODE_DIR,
        capture_output=True,
        check=True,
        timeout=1800,
    )
    return [statistics.median(r["ms"]) for r in json.loads(out.stdout)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    tokens = words(args.tokens)
    length = len("".join(tokens))
    rows = []
    with server() as url:
        write_answer(url, tokens)
        readings = [(f, c) for f in ("native", "ai-sdk", "ag-ui") for c in (False, True)]
        urls = {r: f"{url}/topics/{TOPIC}/events?after=0&format={r[0]}&compact={int(r[1])}" for r in readings}
        measured: dict[tuple[str, bool], list[tuple[int, int, float]]] = {r: [] for r in readings}
        with httpx.Client(timeout=120) as client:
            for r in readings:
                read_late(client, urls[r], r[0], length)  # warm: the first read loads the tail and the pages
            for _ in range(args.repeat):
                for r in readings:
                    measured[r].append(read_late(client, urls[r], r[0], length))
        paints = {}
        for format in ("native", "ai-sdk", "ag-ui"):
            pair = [(format, False), (format, True)]
            for r, ms in zip(pair, client_paint(format, length, args.repeat, [urls[p] for p in pair]), strict=True):
                paints[r] = ms
    for r in readings:
        frames, size, _ = measured[r][0]
        python_ms = statistics.median(m[2] for m in measured[r]) * 1000
        paint = "n/a" if paints[r] is None else f"{paints[r]:,.0f}"
        rows.append(f"| {r[0]} | {'on' if r[1] else 'off'} | {frames:,} | {size:,} | {python_ms:,.1f} | {paint} |")
    print(f"{args.tokens:,} tokens read late, median of {args.repeat} reads (cpus: {os.cpu_count()})\n")
    print("| format | compact | frames | bytes | paint, Python (ms) | paint, client package (ms) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
