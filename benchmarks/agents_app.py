"""The app of the in-process agents scenario: `ssehub serve` plus one registered benchmark agent.

    .venv/bin/python -m benchmarks.agents_app --port 8100 --store sqlite:///bench.db [--workers 2]

It builds its app exactly as `ssehub serve` does (`ssehub.server.build_app`, the same uvicorn
settings and connection protocol) and registers the agent `tokens`. A run of it waits until its
gate topic gets an event, so that its readers are connected before the first token, then emits its
tokens with `run.text` as fast as the hub stores them: the agent runs inside the server process, no
HTTP per token.

A run's body (sent by the Go load generator, `ssebench -agent`): `{"k", "topics", "events",
"size", "gate"}`. Run k emits the events i with i % topics == k, in order, each one's content
`"t=<ns> i=<i> ..."`, so the readers check order, loss and duplicates and measure latency from it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import uvicorn

from ssehub import Hub, Run
from ssehub.asgi import HubApp
from ssehub.exceptions import InvalidInput
from ssehub.options import resolve
from ssehub.server import OPTIONS_ENV as SERVE_OPTIONS_ENV
from ssehub.server import ServeOptions, build_app

__all__ = ["AGENT", "create_app", "register"]

AGENT = "tokens"
#: How the supervisor of `--workers N` hands the store to its worker processes.
OPTIONS_ENV = "SSEHUB_BENCH_AGENTS_OPTIONS"


def _validate(body: dict[str, Any]) -> dict[str, Any]:
    numbers = {name: body.get(name) for name in ("k", "topics", "events", "size")}
    if not all(isinstance(v, int) and v >= 0 for v in numbers.values()) or not numbers["topics"]:
        raise InvalidInput('the body needs non-negative integers "k", "topics", "events" and "size" (topics > 0)')
    if not isinstance(body.get("gate"), str):
        raise InvalidInput('"gate" must name the topic the run waits on')
    return body


async def _wait_for(hub: Hub, gate: str) -> None:
    # A subscription, not a poll: with the Redis store and several workers, the event that opens
    # the gate may be published on any of them.
    async with hub.subscription(gate, after=0) as sub:
        async for chunk in sub.chunks():
            if b"data:" in chunk:
                return


def register(hub: Hub) -> None:
    """Register the benchmark agent `tokens` on `hub`."""

    @hub.agent(AGENT, timeout=600, validate=_validate)
    async def tokens(run: Run, body: dict[str, Any]) -> dict[str, int]:
        k, topics, events = body["k"], body["topics"], body["events"]
        pad = "x" * max(0, body["size"] - 30)
        await _wait_for(hub, body["gate"])
        sent = 0
        for i in range(k, events, topics):
            await run.text(f"t={time.time_ns()} i={i} {pad}")
            sent += 1
        return {"tokens": sent}


def _options() -> ServeOptions:
    # The same options `ssehub serve` takes, by name (`store`, `workers`, `log-level`, ...).
    given: dict[str, Any] = json.loads(os.environ[OPTIONS_ENV])
    return ServeOptions.from_settings(resolve(given, environ={}))


def create_app() -> HubApp:
    """The app of one server process (a uvicorn factory; the options come from the environment)."""
    hub, app = build_app(_options())
    register(hub)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--store", default="sqlite:///ssehub-bench.db")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    given = {"store": args.store, "workers": str(args.workers), "log-level": "warning", "access-log": "false"}
    os.environ[OPTIONS_ENV] = json.dumps(given)
    # The protocol of `ssehub serve`, under the same limits, and with its publish shortcut and stream writes.
    os.environ[SERVE_OPTIONS_ENV] = json.dumps(dict(resolve(given, environ={})))
    # The settings of `ssehub serve` (ssehub.server), so the two are measured alike.
    uvicorn.run(
        f"{__package__ or 'benchmarks'}.agents_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="ssehub.server:worker_protocol",
        ws="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
