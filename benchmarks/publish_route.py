"""The publish route alone, against a bare ASGI app on the same server stack.

    .venv/bin/python benchmarks/publish_route.py [--rounds 5] [--seconds 5] [--connections 32] [--port 19500]

Three servers on loopback, each uvicorn with uvloop and httptools:

- `bare`: the ASGI app below (`bare_app`), which reads the request body and answers 200 with a small
  JSON body: what any Python endpoint pays before it does anything;
- `memory`: `ssehub serve --no-auth --store memory://`;
- `sqlite`: `ssehub serve --no-auth --store sqlite:///<a fresh file>`, the default store.

The hubs run with their defaults otherwise (the access log on, written to a file, as in production).
`wrk -t1 -cN` POSTs a short text/plain body, one token, to 500 topic URLs in turn, with no subscribers:
what the chat scenario's publishers do (docs/benchmarks.md). The three servers take turns round after
round, in a rotating order, so a machine shared with other work slows them alike, and each hub's rate
is quoted as a ratio to the bare app's rate of the same round; the medians are printed at the end.
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
from pathlib import Path
from typing import Any

import httpx

TOPICS = 500
LUA = f"""
local n = 0
local headers = {{["Content-Type"] = "text/plain"}}
request = function()
    n = n % {TOPICS} + 1
    return wrk.format("POST", "/topics/bench/" .. os.getenv("BENCH_RUN") .. "-" .. n .. "/events", headers, "token")
end
"""

_BARE_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body, answer `{"ids":[1]}`: the least an endpoint that takes a POST can do."""
    if scope["type"] != "http":  # lifespan: nothing to start
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _BARE_HEADERS})
    await send({"type": "http.response.body", "body": b'{"ids":[1]}'})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{' '.join(cmd)} did not start: see {log}")


def wrk(port: int, run: str, script: Path, seconds: int, connections: int) -> float:
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        env={**os.environ, "BENCH_RUN": run},
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in done.stdout or "Socket errors" in done.stdout:
        raise SystemExit(f"requests failed:\n{done.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    assert match, done.stdout
    return float(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=0, help="the first of three ports (default: free ones)")
    parser.add_argument("--no-access-log", action="store_true", help="run the hubs with --no-access-log")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    ports = [args.port + i for i in range(3)] if args.port else [free_port() for _ in range(3)]
    python = sys.executable
    uvicorn = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
    hub = [python, "-m", "ssehub", "serve", "--no-auth", "--host", "127.0.0.1"]
    if args.no_access_log:
        hub.append("--no-access-log")
    with tempfile.TemporaryDirectory(prefix="publish-route-") as tmp:
        work = Path(tmp)
        commands = {
            "bare": [python, "-m", "uvicorn", "benchmarks.publish_route:bare_app", "--no-access-log", *uvicorn],
            "memory": [*hub, "--store", "memory://"],
            "sqlite": [*hub, "--store", f"sqlite:///{work / 'bench.db'}"],
        }
        procs: dict[str, subprocess.Popen[bytes]] = {}
        results: dict[str, list[float]] = {name: [] for name in commands}
        ratios: dict[str, list[float]] = {"memory": [], "sqlite": []}
        try:
            for (name, cmd), port in zip(commands.items(), ports, strict=True):
                procs[name] = start([*cmd, "--port", str(port)], port, work / f"{name}.log")
            script = work / "publish.lua"
            script.write_text(LUA)
            names = list(commands)
            for n in range(args.rounds):
                rates: dict[str, float] = {}
                for name in names[n % 3 :] + names[: n % 3]:
                    rates[name] = wrk(ports[names.index(name)], f"r{n}", script, args.seconds, args.connections)
                    results[name].append(rates[name])
                line = f"round {n + 1}: bare {rates['bare']:>8,.0f}/s"
                for name in ("memory", "sqlite"):
                    ratios[name].append(rates[name] / rates["bare"])
                    line += f"   {name} {rates[name]:>8,.0f}/s ({100 * ratios[name][-1]:.0f} %)"
                print(line, flush=True)
        finally:
            for proc in procs.values():
                with_group(proc, signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    with_group(proc, signal.SIGKILL)
    print(f"\nmedians over {args.rounds} rounds (wrk -t1 -c{args.connections}, {TOPICS} topics, text/plain 'token'):")
    print(f"  bare    {statistics.median(results['bare']):>8,.0f} requests/s")
    for name in ("memory", "sqlite"):
        rate, ratio = statistics.median(results[name]), statistics.median(ratios[name])
        print(f"  {name:<7} {rate:>8,.0f} requests/s   {100 * ratio:.0f} % of bare (ratios {fmt(ratios[name])})")


def fmt(values: list[float]) -> str:
    return ", ".join(f"{100 * v:.0f}" for v in values)


def with_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()
