"""Running a hub on uvicorn: `ssehub serve`.

Graceful shutdown: uvicorn waits for open connections before it runs the
lifespan shutdown, and SSE connections never end by themselves. So on SIGTERM
or SIGINT we first drain the hub (every stream gets a `retry:` hint and ends,
and its client reconnects, to another node if there is one, and resumes from
its last id), then let uvicorn stop as usual.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from .config import HubConfig
from .hub import Hub

__all__ = ["ServeOptions", "build_app", "serve"]


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    store: str = "sqlite:///ssehub.db"
    max_events: int = 100_000
    ttl: float = 86_400.0
    log_level: str = "info"
    demo: bool = False
    hub: HubConfig = field(default_factory=HubConfig)


def build_app(options: ServeOptions) -> tuple[Hub, Starlette]:
    hub = Hub(options.store, options.hub, max_events=options.max_events, ttl=options.ttl)
    if options.demo:
        from .demo import register_demo

        register_demo(hub)
    return hub, hub.asgi()


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.hub.drain()
        super().handle_exit(sig, frame)


def serve(options: ServeOptions) -> None:
    logging.basicConfig(level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hub, app = build_app(options)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level=options.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        # Thousands of idle SSE clients are the normal case, not a flood.
        backlog=4096,
    )
    print(f"ssehub serving {hub.store!r} on http://{options.host}:{options.port} (pid {os.getpid()})", flush=True)
    _DrainingServer(config, hub).run()
