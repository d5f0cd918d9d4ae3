"""The cost of access control on the publish path: auth off, an API key, a JWT.

    .venv/bin/python benchmarks/auth_publish.py [--rounds 5] [--seconds 5] [--connections 32]

Two `ssehub serve --store memory:// --no-access-log` processes on loopback, one with no credentials
and one with an API key and a JWT secret; `wrk` (apt-get install wrk) POSTs one small JSON event per
request to `/topics/{t}/events`, a fresh topic per run. The three cases run interleaved, round after
round and in a rotating order, so a machine shared with other work slows them alike; the medians
are printed. On a busy machine they vary more than access control costs, so the script also times,
in-process, what a publish pays for it in the HTTP layer (`Access.screen` and `Access.require`) and
the policy's `authenticate` alone.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request

from ssehub.access import PUBLISH, Policy, mint_token
from ssehub.asgi.auth import Access

KEY = "bench-key-0123456789abcdef"
SECRET = "bench-jwt-secret-0123456789abcdef0123456789"
LUA = """
wrk.method = "POST"
wrk.body = '{"event":"tick","data":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "ssehub", "serve", "--store", "memory://", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("ssehub serve did not start")


def wrk(url: str, auth: str, script: Path, seconds: int, connections: int) -> float:
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        env={**os.environ, "BENCH_AUTH": auth},
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in done.stdout:
        raise SystemExit(f"requests failed:\n{done.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    assert match, done.stdout
    return float(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    token = mint_token(SECRET, publish=["bench/**"], ttl=3600)
    cases = {"auth off": ("", False), "API key": (f"Bearer {KEY}", True), "JWT": (f"Bearer {token}", True)}
    open_proc, open_url = serve("--no-access-log")
    auth_proc, auth_url = serve("--no-access-log", "--api-key", f"bench={KEY}", "--jwt-secret", SECRET)
    results: dict[str, list[float]] = {name: [] for name in cases}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "publish.lua"
            script.write_text(LUA)
            names = list(cases)
            for n in range(args.rounds):
                for name in names[n % 3 :] + names[: n % 3]:
                    auth, keyed = cases[name]
                    url = f"{auth_url if keyed else open_url}/topics/bench/{n}-{name.replace(' ', '-')}/events"
                    rate = wrk(url, auth, script, args.seconds, args.connections)
                    results[name].append(rate)
                    print(f"round {n + 1}: {name:<9} {rate:>9,.0f} requests/s", flush=True)
    finally:
        for proc in (open_proc, auth_proc):
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    base = statistics.median(results["auth off"])
    print("\nmedian requests/s (publish, one small JSON event each):")
    for name, rates in results.items():
        median = statistics.median(rates)
        print(f"  {name:<9} {median:>9,.0f}   {100 * (median / base - 1):+5.1f} %   runs: {[round(r) for r in rates]}")

    in_process(token)


def in_process(token: str) -> None:
    """What a publish pays for access control in the HTTP layer: `screen` and `require`, and the policy alone."""
    hosts = ["127.0.0.1", "localhost", "::1"]
    open_access = Access(Policy(), allowed_hosts=hosts)
    keyed = Access(Policy({"bench": KEY}, jwt_secret=SECRET), allowed_hosts=hosts)

    def scope(authorization: str) -> dict[str, Any]:
        headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), (b"content-length", b"31")]
        if authorization:
            headers.append((b"authorization", authorization.encode()))
        return {"type": "http", "method": "POST", "path": "/topics/bench/x/events", "headers": headers}

    def best(call: Callable[[], object], count: int = 50_000) -> float:
        return 1e6 * min(timeit.repeat(call, number=count, repeat=7)) / count

    print("\nin-process, best of 7, µs per request:")
    for name, access, authorization in (
        ("auth off", open_access, ""),
        ("API key", keyed, f"Bearer {KEY}"),
        ("JWT", keyed, f"Bearer {token}"),
    ):

        def check(access: Access = access, authorization: str = authorization) -> None:
            given = scope(authorization)
            access.screen(given)
            access.require(Request(given), PUBLISH, "bench/x")

        def request_only(authorization: str = authorization) -> None:
            Request(scope(authorization))

        print(f"  {name:<9} screen + require: {best(check) - best(request_only):5.2f}")
    policy = keyed.policy

    def first_use() -> None:
        policy._verified.clear()  # as for a token never seen before: the signature is checked
        policy.authenticate(token)

    print(f"  Policy.authenticate: API key {best(lambda: policy.authenticate(KEY)):.2f}, ", end="")
    print(f"JWT seen before {best(lambda: policy.authenticate(token)):.2f}, JWT first use {best(first_use, 5000):.1f}")


if __name__ == "__main__":
    main()
