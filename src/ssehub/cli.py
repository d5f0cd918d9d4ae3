"""The `ssehub` command line: `ssehub serve` (and the client commands)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .config import HubConfig
from .exceptions import SSEHubError

__all__ = ["main"]


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SSEHUB_{name}", default)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve", help="run the hub server", description="Run the hub server (environment: SSEHUB_<OPTION>)."
    )
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(_env("PORT", "8000")), help="port (default 8000)")
    p.add_argument(
        "--store",
        default=_env("STORE", "sqlite:///ssehub.db"),
        help="memory://, sqlite:///path.db or redis://host:port/db (default sqlite:///ssehub.db)",
    )
    p.add_argument(
        "--heartbeat", type=float, default=float(_env("HEARTBEAT", "15")), help="seconds between keep-alive comments"
    )
    p.add_argument("--retry", type=int, default=int(_env("RETRY", "2000")), help="reconnect delay hint for clients, ms")
    p.add_argument("--max-event-bytes", type=int, default=int(_env("MAX_EVENT_BYTES", str(1024 * 1024))))
    p.add_argument("--max-events", type=int, default=int(_env("MAX_EVENTS", "100000")), help="events kept per topic")
    p.add_argument("--ttl", type=float, default=float(_env("TTL", "86400")), help="seconds a closed topic is kept")
    p.add_argument(
        "--token", default=os.environ.get("SSEHUB_TOKEN"), help="require this bearer token to publish/close/delete"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", "1")),
        help="processes serving one port; above 1 needs a redis:// store (default 1)",
    )
    p.add_argument(
        "--log-level", default=_env("LOG_LEVEL", "info"), choices=["critical", "error", "warning", "info", "debug"]
    )
    p.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .server import ServeOptions, serve

    try:
        hub_config = HubConfig(
            heartbeat=args.heartbeat, retry_ms=args.retry, max_event_bytes=args.max_event_bytes, token=args.token
        )
    except ValueError as exc:
        raise SystemExit(f"ssehub serve: {exc}") from None
    if not 0 <= args.port <= 65535:
        raise SystemExit(f"ssehub serve: port {args.port} is out of range")
    serve(
        ServeOptions(
            host=args.host,
            port=args.port,
            store=args.store,
            max_events=args.max_events,
            ttl=args.ttl,
            log_level=args.log_level,
            workers=args.workers,
            hub=hub_config,
        )
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssehub", description="Durable, resumable Server-Sent Events.")
    p.add_argument("--version", action="version", version=f"ssehub {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except ValueError as exc:  # a bad SSEHUB_* environment value
        print(f"ssehub: {exc}", file=sys.stderr)
        return 2
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except SSEHubError as exc:
        print(f"ssehub {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
