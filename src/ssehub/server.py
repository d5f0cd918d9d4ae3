"""Running a hub on uvicorn: `ssehub serve`.

Graceful shutdown is the hub's lifespan's (see `ssehub.shutdown`): on SIGTERM or SIGINT the hub
drains before uvicorn waits for open connections (every stream gets a `retry:` hint and ends, and
its client reconnects, to another node if there is one, and resumes from its last id), running
runs get `--run-grace` seconds, then uvicorn stops as usual. The same happens when the app runs
under `uvicorn module:app` or is mounted in a host app with `lifespan=hub.lifespan`.

`--workers N` runs N processes on one port (uvicorn's supervisor). They share
nothing but the store, so only a store several processes can share (Redis)
is allowed. Each worker builds its hub from options passed in the environment.

Safe defaults: with no credentials configured, the hub answers everyone, so it
listens on loopback only and says so; any other `--host` needs `--no-auth` (or
credentials). Bound to loopback, it answers only the loopback host names unless
`--allowed-hosts` says otherwise (DNS rebinding, docs/security.md).

HTTP limits (request head size, head and body timeouts, connection caps) are enforced below the app
by `ssehub.connections`, in every worker too; the process's open-file limit is raised to its hard limit.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import os
import resource
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from . import logs
from .access import Policy, parse_api_key, read_keys_file
from .asgi import HubApp, create_app
from .asgi.auth import LOOPBACK_HOSTS, Access
from .asgi.static import demo_routes
from .config import HubConfig
from .connections import LimitedHttpProtocol, Limits, limited_protocol, parse_networks
from .demo import register_demo
from .exceptions import InvalidInput
from .hub import Hub
from .options import ConfigError
from .stores import open_store

__all__ = ["ServeOptions", "app_from_env", "build_app", "serve"]

log = logging.getLogger("ssehub")

#: How `serve` hands its options to the worker processes of `--workers N`.
OPTIONS_ENV = "SSEHUB_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    store: str = "sqlite:///ssehub.db"
    max_events: int = 100_000
    ttl: float = 86_400.0
    max_topics: int = 100_000
    idle_ttl: float = 7 * 86_400.0
    log_level: str = "info"
    log_format: str = "plain"
    access_log: bool = True
    demo: bool = False
    demo_abandon: float = 60.0
    workers: int = 1
    hub: HubConfig = field(default_factory=HubConfig)
    access: Access = field(default_factory=Access)
    #: Serve a non-loopback host with no credentials, knowingly.
    no_auth: bool = False
    limits: Limits = field(default_factory=Limits)
    keep_alive_timeout: float = 5.0
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
                run_grace=settings["run-grace"],
                durable_prefix=None if settings["durable-prefix"] in ("", "off") else settings["durable-prefix"],
                long_poll_timeout=settings["long-poll-timeout"],
                max_stream_bytes=settings["max-stream-bytes"],
                stream_idle_timeout=settings["stream-idle-timeout"],
                purge_interval=settings["purge-interval"],
                max_subscribers=settings["max-subscribers"],
                max_subscribers_per_topic=settings["max-subscribers-per-topic"],
                max_result_bytes=settings["max-result-bytes"],
                max_meta_bytes=settings["max-meta-bytes"],
                tail_bytes=settings["tail-bytes"],
                tail_total_bytes=settings["tail-total-bytes"],
                page_bytes=settings["page-bytes"],
                stall_timeout=settings["stall-timeout"],
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            access=_access(settings, settings["host"]),
            no_auth=settings["no-auth"],
            host=settings["host"],
            port=settings["port"],
            store=settings["store"],
            max_events=settings["max-events"],
            ttl=settings["ttl"],
            max_topics=settings["max-topics"],
            idle_ttl=settings["idle-ttl"],
            log_level=settings["log-level"],
            log_format=settings["log-format"],
            access_log=settings["access-log"],
            demo=settings["demo"],
            demo_abandon=settings["demo-abandon"],
            workers=settings["workers"],
            hub=hub,
            limits=limits_from(settings),
            keep_alive_timeout=settings["keep-alive-timeout"],
            settings=dict(settings),
        )


def limits_from(settings: Mapping[str, Any]) -> Limits:
    """The HTTP limits the options set (see ssehub.connections)."""
    return Limits(
        max_header_bytes=settings["max-header-bytes"],
        header_timeout=settings["header-timeout"],
        body_timeout=settings["body-timeout"],
        max_connections=settings["max-connections"],
        max_connections_per_client=settings["max-connections-per-client"],
        exempt=parse_networks(settings["exempt-clients"]),
    )


def _access(settings: Mapping[str, Any], host: str) -> Access:
    """The access control the options describe; ConfigError naming the option that is wrong."""
    keys: dict[str, str] = {}
    if settings["token"] is not None:
        try:
            keys["token"] = parse_api_key("token=" + settings["token"])[1]
        except ValueError as exc:
            raise ConfigError(f"--token: {exc}") from None
    named = [parse_api_key(text) for text in settings["api-key"]]  # checked when the option was read
    if settings["api-keys-file"]:
        named += read_keys_file(settings["api-keys-file"]).items()
    for name, secret in named:
        if name in keys:
            raise ConfigError(f"the API key {name!r} is given twice")
        keys[name] = secret
    public_key = None
    if settings["jwt-public-key"]:
        path = settings["jwt-public-key"]
        try:
            with open(path, "rb") as f:
                public_key = f.read()
        except OSError as exc:
            raise ConfigError(f"--jwt-public-key: cannot read {path}: {exc.strerror or exc}") from None
    try:
        policy = Policy(
            keys,
            jwt_secret=settings["jwt-secret"],
            jwt_public_key=public_key,
            audience=settings["jwt-audience"],
            issuer=settings["jwt-issuer"],
            leeway=settings["jwt-leeway"],
            token_ttl=settings["token-ttl"],
        )
    except InvalidInput as exc:
        raise ConfigError(f"access control: {exc.message}") from None
    if policy.enabled and settings["no-auth"]:
        raise ConfigError("--no-auth, yet credentials are configured: drop one or the other")
    hosts: list[str] | None = settings["allowed-hosts"] or None
    if hosts is None and _loopback(host):
        hosts = [*LOOPBACK_HOSTS, host]
    try:
        return Access(
            policy, cors_origins=settings["cors-origin"], allowed_hosts=hosts, cookie_name=settings["cookie-name"]
        )
    except InvalidInput as exc:
        raise ConfigError(exc.message) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(options: ServeOptions) -> tuple[int, str]:
    """The start-up log line about access control, and its level (a warning for a network address with
    --no-auth); InvalidInput when the hub would be open to a network without it."""
    policy = options.access.policy
    if policy.enabled:
        return logging.INFO, f"access control: {policy.describe()} (every endpoint but /healthz and the static files)"
    if not _loopback(options.host):
        if not options.no_auth:
            raise InvalidInput(
                f"--host {options.host} with no credentials would let anyone who reaches it read and write every "
                "topic: configure --api-key or --jwt-secret, or pass --no-auth"
            )
        return logging.WARNING, f"--no-auth: anyone who reaches {options.host}:{options.port} may do anything"
    # The safe default, said at start: information, not a warning (there is nothing to fix).
    return (
        logging.INFO,
        "no credentials configured, so listening on loopback only: anyone on this machine may do anything",
    )


def build_app(options: ServeOptions) -> tuple[Hub, HubApp]:
    hub = Hub(
        options.store,
        options.hub,
        max_events=options.max_events,
        ttl=options.ttl,
        max_topics=options.max_topics,
        idle_ttl=options.idle_ttl,
    )
    access = options.access
    if options.demo:
        if access.enabled and not access.policy.can_mint:
            raise InvalidInput("--demo with access control needs --jwt-secret or an API key to sign the page's tokens")
        register_demo(hub, abandon=options.demo_abandon)
    routes = demo_routes(access) if options.demo else None
    return hub, create_app(hub, access=access, extra_routes=routes, access_log=options.access_log)


def app_from_env() -> HubApp:
    """The app of one worker process of `ssehub serve --workers N` (a uvicorn factory)."""
    options = ServeOptions.from_settings(json.loads(os.environ[OPTIONS_ENV]))
    logs.configure(options.log_level, options.log_format)
    return build_app(options)[1]


@functools.cache
def _worker_protocol_class() -> type[LimitedHttpProtocol]:
    return limited_protocol(limits_from(json.loads(os.environ[OPTIONS_ENV])))


def worker_protocol(**kwargs: Any) -> asyncio.Protocol:
    """The HTTP protocol of one worker process of `ssehub serve --workers N`, under the limits of the options
    in the environment. uvicorn starts its workers from a pickled configuration, which names this function:
    a class made for the limits at hand could not be named, nor would its limits travel with it."""
    return _worker_protocol_class()(**kwargs)


def _serve_workers(options: ServeOptions, announce: Callable[[], None]) -> None:
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
    announce()
    _print_demo_url(options)
    uvicorn.run(
        "ssehub.server:app_from_env",
        factory=True,
        workers=options.workers,
        **_uvicorn_options(options, "ssehub.server:worker_protocol"),
    )


def _uvicorn_options(options: ServeOptions, http: type[asyncio.Protocol] | str) -> dict[str, Any]:
    return {
        "host": options.host,
        "port": options.port,
        "loop": "uvloop",
        # uvicorn's httptools protocol under the HTTP limits (ssehub.connections).
        "http": http,
        # The hub serves no WebSocket: an Upgrade is answered as a plain request.
        "ws": "none",
        "timeout_keep_alive": options.keep_alive_timeout,
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
        # A server (Redis) that is not up yet is not an error (the hub waits for it, said in one
        # line); one that is up and cannot keep the durability the URL asks for is.
        try:
            await store.check_durability()
        finally:
            await store.aclose()
        return
    await store.start()
    await store.aclose()


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (each connection is one); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def serve(options: ServeOptions) -> None:
    logs.configure(options.log_level, options.log_format)
    files = raise_open_file_limit()
    wanted = options.limits.max_connections
    if files != resource.RLIM_INFINITY and wanted and files < wanted + 100:  # the store's and the log's files too
        log.warning(
            "open files are limited to %d per process, below --max-connections %d: connections beyond the limit "
            "fail to be accepted instead of getting 503 (raise `ulimit -n`)",
            files,
            options.limits.max_connections,
        )
    level, exposure = check_exposure(options)
    # Open the store once before uvicorn does, so that a wrong path or URL is a one-line error, not a traceback.
    asyncio.run(_check_store(options.store))
    if options.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    if options.workers > 1:
        _serve_workers(options, lambda: log.log(level, exposure))
        return
    hub, app = build_app(options)
    config = uvicorn.Config(app, **_uvicorn_options(options, limited_protocol(options.limits)))
    print(f"ssehub serving {hub.store!r} on http://{options.host}:{options.port} (pid {os.getpid()})", flush=True)
    log.log(level, exposure)
    _print_demo_url(options)
    uvicorn.Server(config).run()
