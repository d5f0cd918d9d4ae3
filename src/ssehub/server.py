"""Running a hub on uvicorn: `ssehub serve`.

Graceful shutdown is the hub's lifespan's (see `ssehub.shutdown`): on SIGTERM or SIGINT the hub
drains before uvicorn waits for open connections (every stream gets a `retry:` hint and ends, and
its client reconnects, to another node if there is one, and resumes from its last id), running
runs get `--run-grace` seconds, then uvicorn stops as usual. The same happens when the app runs
under `uvicorn module:app` or is mounted in a host app with `lifespan=hub.lifespan`.

`--workers N` runs N processes on one port (uvicorn's supervisor). They share
nothing but the store, so only a store several processes can share (Redis)
is allowed. Each worker builds its hub from options passed in the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from . import logs
from .asgi import HubApp, create_app
from .asgi.static import demo_routes
from .config import HubConfig
from .demo import register_demo
from .exceptions import InvalidInput
from .hub import Hub
from .options import ConfigError
from .stores import open_store

__all__ = ["ServeOptions", "app_from_env", "build_app", "serve"]

#: How `serve` hands its options to the worker processes of `--workers N`.
OPTIONS_ENV = "SSEHUB_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    store: str = "sqlite:///ssehub.db"
    max_events: int = 100_000
    ttl: float = 86_400.0
    log_level: str = "info"
    log_format: str = "plain"
    access_log: bool = True
    demo: bool = False
    demo_abandon: float = 60.0
    workers: int = 1
    hub: HubConfig = field(default_factory=HubConfig)
    #: The resolved options these came from, by name (what the worker processes of --workers N rebuild from).
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ServeOptions:
        """From the resolved options (`ssehub.options.resolve`), by name."""
        try:
            hub = HubConfig(
                heartbeat=settings["heartbeat"],
                retry_ms=settings["retry"],
                max_event_bytes=settings["max-event-bytes"],
                token=settings["token"],
                run_grace=settings["run-grace"],
                durable_prefix=None if settings["durable-prefix"] in ("", "off") else settings["durable-prefix"],
                long_poll_timeout=settings["long-poll-timeout"],
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            host=settings["host"],
            port=settings["port"],
            store=settings["store"],
            max_events=settings["max-events"],
            ttl=settings["ttl"],
            log_level=settings["log-level"],
            log_format=settings["log-format"],
            access_log=settings["access-log"],
            demo=settings["demo"],
            demo_abandon=settings["demo-abandon"],
            workers=settings["workers"],
            hub=hub,
            settings=dict(settings),
        )


def build_app(options: ServeOptions) -> tuple[Hub, HubApp]:
    hub = Hub(options.store, options.hub, max_events=options.max_events, ttl=options.ttl)
    if options.demo:
        register_demo(hub, abandon=options.demo_abandon)
    routes = demo_routes() if options.demo else None
    return hub, create_app(hub, extra_routes=routes, access_log=options.access_log)


def app_from_env() -> HubApp:
    """The app of one worker process of `ssehub serve --workers N` (a uvicorn factory)."""
    options = ServeOptions.from_settings(json.loads(os.environ[OPTIONS_ENV]))
    logs.configure(options.log_level, options.log_format)
    return build_app(options)[1]


def _serve_workers(options: ServeOptions) -> None:
    store = open_store(options.store)
    if not store.shared:
        raise InvalidInput(
            f"--workers {options.workers} needs a store that processes can share (redis://host:port/db); "
            f"{options.store} belongs to one process"
        )
    if not options.settings:
        raise InvalidInput("--workers above 1 needs ServeOptions.from_settings(...): the workers rebuild from them")
    os.environ[OPTIONS_ENV] = json.dumps(dict(options.settings))
    # The store's repr, not its URL: it names the place and never a password.
    print(
        f"ssehub serving {store!r} on http://{options.host}:{options.port} with {options.workers} workers", flush=True
    )
    _print_demo_url(options)
    uvicorn.run("ssehub.server:app_from_env", factory=True, workers=options.workers, **_uvicorn_options(options))


def _uvicorn_options(options: ServeOptions) -> dict[str, Any]:
    return {
        "host": options.host,
        "port": options.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "log_level": options.log_level,
        # Our own logging set-up (ssehub.logs) for uvicorn's lines too, and our access log instead of
        # uvicorn's, which logs a stream when it starts, not what it sent nor why it ended.
        "log_config": None,
        "access_log": False,
        # Streams end at once on SIGTERM; what may still hold a connection is a request waiting for a run,
        # which ends within the grace.
        "timeout_graceful_shutdown": options.hub.run_grace + 5,
        # Thousands of idle SSE clients are the normal case, not a flood.
        "backlog": 4096,
    }


def _print_demo_url(options: ServeOptions) -> None:
    if options.demo:
        # 0.0.0.0 and :: are where to listen, not where to browse.
        host = "127.0.0.1" if options.host in ("0.0.0.0", "::", "") else options.host
        host = f"[{host}]" if ":" in host else host
        print(f"demo chat: open http://{host}:{options.port}/ in a browser", flush=True)


async def _check_store(url: str) -> None:
    store = open_store(url)  # a malformed URL fails here
    if store.shared:
        return  # a server (Redis) that is not up yet is not an error: the hub waits for it, said in one line
    await store.start()
    await store.aclose()


def serve(options: ServeOptions) -> None:
    logs.configure(options.log_level, options.log_format)
    # Open the store once before uvicorn does, so that a wrong path or URL is a one-line error, not a traceback.
    asyncio.run(_check_store(options.store))
    if options.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    if options.workers > 1:
        _serve_workers(options)
        return
    hub, app = build_app(options)
    config = uvicorn.Config(app, **_uvicorn_options(options))
    print(f"ssehub serving {hub.store!r} on http://{options.host}:{options.port} (pid {os.getpid()})", flush=True)
    _print_demo_url(options)
    uvicorn.Server(config).run()
