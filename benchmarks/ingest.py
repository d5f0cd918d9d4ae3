"""Streaming ingest against one POST per token: events/s into a real `ssehub serve` on SQLite.

    .venv/bin/python benchmarks/ingest.py [--topics 500] [--tokens 80] [--concurrency 32] [--store sqlite]

The shape of the benchmark's chat scenarios: `--topics` answers stream `--tokens` tokens each,
interleaved (token i goes to topic i % topics), fed by `--concurrency` workers, worker w owning the
topics k with k % concurrency == w. Streamed: each topic is one chunked `application/x-ndjson` POST
held open from the start, one chunk per token, written as it is produced (as the Go load generator's
`-stream` does); the time runs until every stream's answer is in. Per POST: each worker sends its
tokens one `application/json` POST at a time over a keep-alive connection. No readers: this is the
publish path alone. The client is plain asyncio sockets in one process, sharing the machine with the
server, so on a small machine it is part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(store: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    url = f"sqlite:///{directory / 'bench.db'}" if store == "sqlite" else "memory://"
    cmd = [sys.executable, "-m", "ssehub", "serve", "--store", url, "--port", str(port), "--no-access-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("ssehub serve did not start")


def payload(i: int) -> str:
    return f"t={time.time_ns()} i={i} "


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for header in head.split(b"\r\n")[1:]:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def streamed(port: int, run: str, topics: int, tokens: int, concurrency: int) -> float:
    conns = []
    for k in range(topics):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /topics/{run}-{k}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        conns.append((reader, writer))
    total = topics * tokens

    async def worker(w: int) -> int:
        for i in range(total):
            k = i % topics
            if k % concurrency != w:
                continue
            line = json.dumps({"event": "message", "data": payload(i)}).encode() + b"\n"
            writer = conns[k][1]
            writer.write(b"%x\r\n%s\r\n" % (len(line), line))
            await writer.drain()
            if i % 64 == 0:
                await asyncio.sleep(0)  # let the other workers write too, as concurrent producers would
        stored = 0
        for k in range(w, topics, concurrency):
            reader, writer = conns[k]
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            status, body = await read_answer(reader)
            if status != 200:
                raise SystemExit(f"a stream answered {status}: {body[:200]!r}")
            stored += json.loads(body)["count"]
            writer.close()
        return stored

    start = time.perf_counter()
    counts = await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    if sum(counts) != total:
        raise SystemExit(f"stored {sum(counts)} of {total} events")
    return total / elapsed


async def per_post(port: int, run: str, topics: int, tokens: int, concurrency: int) -> float:
    total = topics * tokens

    async def worker(w: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(total):
            k = i % topics
            if k % concurrency != w:
                continue
            body = json.dumps({"event": "message", "data": payload(i)}).encode()
            writer.write(
                f"POST /topics/{run}-{k}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            status, answer = await read_answer(reader)
            if status != 200:
                raise SystemExit(f"a publish answered {status}: {answer[:200]!r}")
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=80, help="tokens per topic")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        proc, port = serve(args.store, Path(directory))
        try:
            shape = (args.topics, args.tokens, args.concurrency)
            rates = {
                "streamed (one NDJSON POST per topic)": asyncio.run(streamed(port, "s", *shape)),
                "one POST per token": asyncio.run(per_post(port, "p", *shape)),
            }
        finally:
            proc.terminate()
            proc.wait(15)
    print(f"{args.topics} topics x {args.tokens} tokens, {args.concurrency} producers, {args.store} store:")
    for name, rate in rates.items():
        print(f"  {name:<38} {rate:>9,.0f} events/s")


if __name__ == "__main__":
    main()
