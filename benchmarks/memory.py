"""Peak server memory while subscribers that read nothing hold streams of large events.

    python -m benchmarks.memory [--events 2000] [--event-bytes 1000000] [--subscribers 3] [--port 19201]

Starts `ssehub serve` on a fresh SQLite file, opens `--subscribers` streams from the start of one
topic on raw sockets with a small receive buffer that never read, publishes `--events` events of
`--event-bytes` each, and prints the server's peak resident memory (VmHWM, Linux). A hub whose memory
is bounded in bytes stays near its tail and page bounds however many events and stalled readers there
are; one that keeps events by count, or a page of them per reader, grows with the events' size.
Extra arguments after `--` go to `ssehub serve` (e.g. `-- --stall-timeout 5`).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stalled_reader(port: int, topic: str) -> socket.socket:
    """A subscriber from the start whose socket buffer is small and never read."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sets the window
    s.connect(("127.0.0.1", port))
    s.sendall(
        f"GET /topics/{topic}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        "Last-Event-ID: 0\r\n\r\n".encode()
    )
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--event-bytes", type=int, default=1_000_000)
    parser.add_argument("--subscribers", type=int, default=3)
    parser.add_argument("--port", type=int, default=19201)
    parser.add_argument("serve_args", nargs="*", help="more arguments for ssehub serve (after --)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ssehub-memory-") as tmp:
        cmd = [sys.executable, "-m", "ssehub", "serve", "--host", "127.0.0.1", "--port", str(args.port)]
        cmd += ["--store", f"sqlite:///{tmp}/memory.db", "--no-access-log", "--log-level", "warning"]
        cmd += args.serve_args
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, env=env)
        readers: list[socket.socket] = []
        try:
            base = f"http://127.0.0.1:{args.port}"
            with httpx.Client(base_url=base, timeout=60) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("ssehub serve did not start")
                    time.sleep(0.1)
                topic = "memory-bench"
                client.post(f"/topics/{topic}/events", content=b"x", headers={"content-type": "text/plain"})
                readers = [_stalled_reader(args.port, topic) for _ in range(args.subscribers)]
                time.sleep(0.5)
                body = b"x" * args.event_bytes
                started = time.monotonic()
                slowest = 0.0
                for i in range(args.events):
                    t0 = time.monotonic()
                    r = client.post(f"/topics/{topic}/events", content=body, headers={"content-type": "text/plain"})
                    r.raise_for_status()
                    slowest = max(slowest, time.monotonic() - t0)
                    if (i + 1) % 500 == 0:
                        print(f"  {i + 1} events, rss {_rss_mb(proc.pid):.0f} MB, peak {_peak_rss_mb(proc.pid):.0f} MB")
                elapsed = time.monotonic() - started
                time.sleep(1.0)  # let the subscribers' tasks catch up with the last events
            peak = _peak_rss_mb(proc.pid)
            print(
                f"events={args.events} event_bytes={args.event_bytes} subscribers={args.subscribers} "
                f"publish_seconds={elapsed:.1f} slowest_publish_ms={slowest * 1000:.0f} "
                f"rss_now_mb={_rss_mb(proc.pid):.0f} peak_rss_mb={peak:.0f}"
            )
        finally:
            for s in readers:
                s.close()
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
