"""Hostile bodies against a real `ssehub serve`: how long each takes to be refused, and how long
`/healthz` takes meanwhile (the event loop's lag).

    .venv/bin/python benchmarks/hostile.py [--url http://127.0.0.1:8000] [--rounds 3]

Without --url it starts `ssehub serve --store memory://` on a free port and stops it at the end.
A thread asks GET /healthz one request after another (5 ms apart) while one hostile body at a time
is POSTed to /topics/big/events; for each it prints the status, the time to the answer and the
worst /healthz latency during it. The bodies are 8 MB each (the default request limit is 8 MiB):

- 2.7 million `{}` in one array (a batch far above --max-batch);
- one event whose data is an array of 4 million zeros (slow to parse, above --max-event-bytes);
- an array nested 3 million deep.

The first request after the server starts includes starting its parsing worker processes.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time

import httpx

BODIES = {
    "2.7M {} in one array": "[" + ",".join(["{}"] * 2_700_000) + "]",
    "4M zeros in one event": '{"data":[' + ",".join(["0"] * 4_000_000) + "]}",
    "3M-deep array": "[" * 3_000_000 + "]" * 3_000_000,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "ssehub", "serve", "--store", "memory://", "--port", str(port), "--no-access-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("ssehub serve did not start")


def measure(url: str, body: str) -> tuple[int, float, float]:
    """(status, seconds to the answer, worst /healthz seconds meanwhile)."""
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                began = time.perf_counter()
                c.get("/healthz")
                latencies.append(time.perf_counter() - began)
                time.sleep(0.005)

    thread = threading.Thread(target=probe)
    thread.start()
    time.sleep(0.2)
    with httpx.Client(base_url=url, timeout=60) as c:
        began = time.perf_counter()
        r = c.post("/topics/big/events", content=body, headers={"content-type": "application/json"})
        took = time.perf_counter() - began
    time.sleep(0.2)
    stop.set()
    thread.join()
    return r.status_code, took, max(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running hub (default: start one)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    proc, url = (None, args.url) if args.url else start()
    try:
        for name, body in BODIES.items():
            for _ in range(args.rounds):
                status, took, worst = measure(url, body)
                print(f"{name:24} {status} in {took * 1000:6.0f} ms; worst /healthz {worst * 1000:5.0f} ms", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
