"""The options of `ssehub serve`: declared once, read from flags, `SSEHUB_*` variables and a TOML file.

Precedence, highest first: a command-line flag; then the environment (`SSEHUB_MAX_EVENT_BYTES`
for `--max-event-bytes`); then the TOML file named by `--config` (or `SSEHUB_CONFIG`), whose keys
are the option names (`max-event-bytes = 65536`; `max_event_bytes` is read the same); then the
default. Every option is one `Option` in `OPTIONS`: its name, how its text is parsed and checked,
its default, its help, and whether it is a secret (masked by `--print-config`). A value that does
not parse names its option and where it came from, in one line:

    ssehub serve: SSEHUB_PORT: must be an integer from 0 to 65535, got 'abc'
    ssehub serve: /etc/ssehub.toml: unknown option 'prot'

Nothing here knows the hub or the server: `server.py` turns the resolved `Settings` into a hub,
an app and uvicorn's configuration.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .access import parse_api_key
from .exceptions import InvalidInput

__all__ = [
    "OPTIONS",
    "ConfigError",
    "Option",
    "Settings",
    "boolean",
    "choice",
    "integer",
    "number",
    "resolve",
    "text",
]

Parse = Callable[[str], Any]


class ConfigError(InvalidInput):
    """An option has a value that cannot be used; the message names the option and its source."""

    code = "invalid_option"


@dataclass(frozen=True, slots=True)
class Option:
    #: The flag without its dashes; the environment variable and file key are made from it.
    name: str
    parse: Parse
    default: Any
    help: str
    #: Where --help lists it.
    group: str = "server"
    #: Masked by --print-config.
    secret: bool = False
    #: A switch: `--demo` / `--no-demo`; true/false, yes/no, on/off or 1/0 in the environment.
    flag: bool = False
    #: May be given more than once: a list (comma-separated in the environment).
    repeat: bool = False
    #: The environment variable, when it is not SSEHUB_ + the name in capitals.
    env_name: str | None = None
    metavar: str | None = None

    @property
    def env(self) -> str:
        return self.env_name or "SSEHUB_" + self.name.upper().replace("-", "_")

    @property
    def attr(self) -> str:
        """The name in Python: `max_event_bytes`."""
        return self.name.replace("-", "_")


# -- parsers: text -> value, or ValueError saying what is wanted ---------------------------------------------


def integer(low: int | None = None, high: int | None = None) -> Parse:
    def parse(value: str) -> int:
        text = value.strip()
        ok = text.isascii() and text.lstrip("-").isdigit() and len(text) <= 19
        number = int(text) if ok else None
        if number is None or (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"must be an integer{_range(low, high)}, got {value[:40]!r}")
        return number

    return parse


def number(low: float | None = None, high: float | None = None, *, above: float | None = None) -> Parse:
    """A decimal number from `low` to `high`, or above `above` (exclusive)."""

    def parse(value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            result = float("nan")
        bad = result != result or result in (float("inf"), float("-inf"))
        bad = bad or (low is not None and result < low) or (high is not None and result > high)
        bad = bad or (above is not None and result <= above)
        if bad:
            span = f" above {above:g}" if above is not None else _range(low, high)
            raise ValueError(f"must be a number{span}, got {value[:40]!r}")
        return result

    return parse


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" of at least {low:g}"
    if high is not None:
        return f" of at most {high:g}"
    return ""


def choice(*values: str) -> Parse:
    def parse(value: str) -> str:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}, got {value[:40]!r}")
        return value

    return parse


def text(max_length: int = 4096) -> Parse:
    def parse(value: str) -> str:
        if len(value) > max_length:
            raise ValueError(f"must be at most {max_length} characters")
        return value

    return parse


def api_key(value: str) -> str:
    parse_api_key(value)  # checked here, kept as given: the settings travel to --workers as JSON
    return value


def networks(value: str) -> str:
    """An address, a CIDR network, `loopback` or `none` (ssehub.connections reads them)."""
    if value not in ("loopback", "none"):
        try:
            ipaddress.ip_network(value.strip("[]"), strict=False)
        except ValueError:
            raise ValueError(
                f"must be loopback, none, an address or a network (10.0.0.0/8), got {value[:40]!r}"
            ) from None
    return value


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"must be true or false, got {value[:40]!r}")


# -- the options -------------------------------------------------------------------------------------------------

OPTIONS: tuple[Option, ...] = (
    Option("host", text(255), "127.0.0.1", "address to bind", metavar="ADDRESS"),
    Option("port", integer(0, 65535), 8000, "port to listen on (0: any free port)"),
    Option(
        "store",
        text(),
        "sqlite:///ssehub.db",
        "memory://, sqlite:///relative/to/cwd.db, sqlite:////absolute/path.db (four slashes), "
        "or redis://[user:password@]host:port/db (rediss:// for TLS, ?cluster=yes for a Redis Cluster)",
        group="store",
        metavar="URL",
    ),
    Option(
        "max-events", integer(1), 100_000, "events kept per topic; older ones are dropped", group="store", metavar="N"
    ),
    Option("ttl", number(0), 86_400.0, "seconds a closed topic is kept", group="store", metavar="SECONDS"),
    Option("heartbeat", number(above=0), 15.0, "seconds of silence before a keep-alive comment", metavar="SECONDS"),
    Option("retry", integer(1), 2000, "reconnect delay suggested to clients, in milliseconds", metavar="MS"),
    Option("max-event-bytes", integer(1), 1024 * 1024, "largest event (data and name), in bytes", metavar="BYTES"),
    Option(
        "token",
        text(),
        None,
        "one API key, named `token`: shorthand for --api-key token=SECRET",
        group="access",
        secret=True,
        metavar="SECRET",
    ),
    Option(
        "api-key",
        api_key,
        [],
        "a named API key, NAME=SECRET (16+ characters); may do everything; repeatable",
        group="access",
        secret=True,
        repeat=True,
        env_name="SSEHUB_API_KEYS",
        metavar="NAME=SECRET",
    ),
    Option(
        "api-keys-file", text(), None, "a file of NAME=SECRET lines, one API key each", group="access", metavar="FILE"
    ),
    Option(
        "jwt-secret",
        text(),
        None,
        "verify HS256 tokens with this secret (32+ bytes); the hub signs its own tokens with it too",
        group="access",
        secret=True,
        metavar="SECRET",
    ),
    Option(
        "jwt-public-key",
        text(),
        None,
        "verify RS256/ES256/EdDSA tokens with this PEM public key (needs ssehub[crypto])",
        group="access",
        metavar="FILE",
    ),
    Option("jwt-audience", text(200), None, "tokens must carry this aud", group="access", metavar="AUD"),
    Option("jwt-issuer", text(200), None, "tokens must carry this iss", group="access", metavar="ISS"),
    Option(
        "jwt-leeway", number(0, 300), 0.0, "seconds of clock skew allowed on exp", group="access", metavar="SECONDS"
    ),
    Option(
        "token-ttl",
        number(1, 7 * 86_400),
        900.0,
        "seconds the tokens the hub mints stay valid: a run's token, the demo page's",
        group="access",
        metavar="SECONDS",
    ),
    Option("cookie-name", text(100), "ssehub_token", "a cookie that may carry the token", group="access"),
    Option(
        "cors-origin",
        text(300),
        [],
        "let pages of this origin (https://app.example.com, or *) call the hub; repeatable",
        group="access",
        repeat=True,
        metavar="ORIGIN",
    ),
    Option(
        "allowed-hosts",
        text(300),
        [],
        "answer only requests whose Host is one of these (* for any; default: the loopback names when bound "
        "to loopback, else any); repeatable",
        group="access",
        repeat=True,
        metavar="HOST",
    ),
    Option(
        "no-auth",
        boolean,
        False,
        "serve a non-loopback --host with no credentials configured: anyone who reaches it may do anything",
        group="access",
        flag=True,
    ),
    Option(
        "run-grace",
        number(0, 3600),
        5.0,
        "on SIGTERM, seconds running agent runs get to finish before they are cancelled",
        group="agents",
        metavar="SECONDS",
    ),
    Option(
        "demo",
        boolean,
        False,
        "register the demo agent `chat` (POST /agents/chat) and serve its chat page at /",
        group="agents",
        flag=True,
    ),
    Option(
        "demo-abandon",
        number(0, 86_400),
        60.0,
        "seconds a demo run may go on with nobody reading it before it is cancelled (0: never)",
        group="agents",
        metavar="SECONDS",
    ),
    Option(
        "durable-prefix",
        text(200),
        "/v1/stream",
        "serve the Durable Streams protocol at PREFIX/{topic} ('off': not at all)",
        group="durable streams",
        metavar="PREFIX",
    ),
    Option(
        "long-poll-timeout",
        number(above=0, high=300),
        15.0,
        "seconds a Durable Streams long-poll waits for data before it answers 204",
        group="durable streams",
        metavar="SECONDS",
    ),
    Option("workers", integer(1, 256), 1, "processes serving one port; above 1 needs a redis:// store", metavar="N"),
    Option(
        "log-level",
        choice("critical", "error", "warning", "info", "debug"),
        "info",
        "the least severe messages logged",
        group="logging",
    ),
    Option(
        "log-format",
        choice("plain", "json"),
        "plain",
        "plain lines (key=value fields) or one JSON object per line",
        group="logging",
        metavar="FORMAT",
    ),
    Option(
        "access-log",
        boolean,
        True,
        "one line per request and per stream (topic, from-id, events, bytes, duration, why it ended)",
        group="logging",
        flag=True,
    ),
    # Streaming ingest
    Option(
        "max-stream-bytes",
        integer(1),
        64 * 1024 * 1024,
        "most bytes one streamed (application/x-ndjson) publish may carry; beyond it the stream answers 413",
        group="streaming ingest",
        metavar="BYTES",
    ),
    Option(
        "stream-idle-timeout",
        number(above=0, high=86_400),
        300.0,
        "seconds a streamed publish may go without finishing a line before it is answered 408",
        group="streaming ingest",
        metavar="SECONDS",
    ),
    # HTTP limits
    Option(
        "max-header-bytes",
        integer(1024, 16 * 1024 * 1024),
        64 * 1024,
        "largest request line and headers together; larger gets 431",
        group="http limits",
        metavar="BYTES",
    ),
    Option(
        "header-timeout",
        number(above=0, high=3600),
        10.0,
        "seconds a request's line and headers have to arrive in whole; then 408 and closed",
        group="http limits",
        metavar="SECONDS",
    ),
    Option(
        "body-timeout",
        number(above=0, high=3600),
        30.0,
        "seconds a request body may stall between two pieces; then 408 and closed",
        group="http limits",
        metavar="SECONDS",
    ),
    Option(
        "keep-alive-timeout",
        number(above=0, high=3600),
        5.0,
        "seconds an idle connection is kept open between requests",
        group="http limits",
        metavar="SECONDS",
    ),
    Option(
        "max-connections",
        integer(0),
        10_000,
        "open connections per process; more get 503 with Retry-After (0: no cap)",
        group="http limits",
        metavar="N",
    ),
    Option(
        "max-connections-per-client",
        integer(0),
        1000,
        "open connections per client address and process; more get 429 with Retry-After (0: no cap)",
        group="http limits",
        metavar="N",
    ),
    Option(
        "exempt-clients",
        networks,
        [],
        "client addresses or networks (10.0.0.0/8) the per-client cap does not apply to, as a reverse proxy's; "
        "loopback, or none (default: loopback); repeatable",
        group="http limits",
        repeat=True,
        metavar="NETWORK",
    ),
    # Topic bounds
    Option(
        "max-topics",
        integer(0),
        100_000,
        "topics the store may hold, open or closed; a publish creating one more gets 507 (0: no cap)",
        group="topic bounds",
        metavar="N",
    ),
    Option(
        "idle-ttl",
        number(0),
        7 * 86_400.0,
        "seconds an open topic may go without a publish before it is deleted (0: never; not Durable Streams)",
        group="topic bounds",
        metavar="SECONDS",
    ),
    Option(
        "purge-interval",
        number(above=0, high=86_400),
        60.0,
        "seconds between retention sweeps (closed topics past --ttl, open ones past --idle-ttl)",
        group="topic bounds",
        metavar="SECONDS",
    ),
    Option(
        "max-subscribers",
        integer(0),
        10_000,
        "subscriptions (streams, long-polls) per process; more get 503 with Retry-After (0: no cap)",
        group="topic bounds",
        metavar="N",
    ),
    Option(
        "max-subscribers-per-topic",
        integer(0),
        0,
        "subscriptions of one topic per process; more get 429 with Retry-After (0: no cap)",
        group="topic bounds",
        metavar="N",
    ),
    # Input bounds
    Option(
        "max-result-bytes",
        integer(1, 1 << 30),
        256 * 1024,
        "largest result of an agent run, as JSON; a run whose agent returns more fails, said aloud",
        group="input bounds",
        metavar="BYTES",
    ),
    Option(
        "max-meta-bytes",
        integer(1, 1 << 30),
        16 * 1024,
        "largest metadata a run is started with (e.g. an AG-UI client's ids), as JSON",
        group="input bounds",
        metavar="BYTES",
    ),
    # Delivery bounds
    Option(
        "tail-bytes",
        integer(1),
        4 * 1024 * 1024,
        "bytes of recent events kept in memory per active topic; older ones are read from the store",
        group="delivery",
        metavar="BYTES",
    ),
    Option(
        "tail-total-bytes",
        integer(1),
        256 * 1024 * 1024,
        "bytes of recent events kept in memory for all topics together; the largest tails are trimmed first",
        group="delivery",
        metavar="BYTES",
    ),
    Option(
        "page-bytes",
        integer(1),
        1024 * 1024,
        "bytes read for and written to one subscriber in one step (at least one event)",
        group="delivery",
        metavar="BYTES",
    ),
    Option(
        "stall-timeout",
        number(above=0),
        30.0,
        "seconds a subscriber's socket may take no data before its stream is cut (it resumes from its id)",
        group="delivery",
        metavar="SECONDS",
    ),
)


# -- resolving ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolved:
    value: Any
    source: str


class Settings(Mapping[str, Any]):
    """The value of every option (by its name, `max-event-bytes`), and where each came from."""

    def __init__(self, options: Sequence[Option], resolved: Mapping[str, _Resolved]) -> None:
        self._options = {o.name: o for o in options}
        self._resolved = dict(resolved)

    def __getitem__(self, name: str) -> Any:
        return self._resolved[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved)

    def __len__(self) -> int:
        return len(self._resolved)

    def source(self, name: str) -> str:
        return self._resolved[name].source

    def as_dict(self) -> dict[str, Any]:
        return {name: r.value for name, r in self._resolved.items()}

    def to_toml(self) -> str:
        """The effective configuration as a TOML file, each line saying where its value came from."""
        lines = ["# ssehub serve: the effective configuration (secrets masked); usable as --config"]
        for name, resolved in self._resolved.items():
            option = self._options[name]
            if resolved.value is None or resolved.value == []:
                lines.append(f"# {name} ={'':<{28 - len(name)}}# not set")
                continue
            shown = _toml_value("***" if option.secret else resolved.value, option)
            lines.append(f"{name} = {shown:<{28 - len(name)}} # {resolved.source}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any, option: Option) -> str:
    if option.secret and option.repeat and isinstance(value, list):
        value = ["***"] * len(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v, option) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def _parse(option: Option, raw: Any, source: str) -> Any:
    try:
        if option.repeat:
            items = raw if isinstance(raw, list) else [raw]
            return [option.parse(_as_text(item, option)) for item in items]
        return option.parse(_as_text(raw, option))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _as_text(raw: Any, option: Option) -> str:
    # TOML gives typed values; the parsers take text, as from a flag or the environment.
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float | str):
        return str(raw)
    raise ValueError(f"{option.name} takes a single value, got {type(raw).__name__}")


def read_file(path: str | Path, options: Sequence[Option] = OPTIONS) -> dict[str, Any]:
    """The options a TOML file sets, by name; ConfigError for an unreadable file or an unknown key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    known = {o.name for o in options}
    found: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name not in known:
            raise ConfigError(f"{path}: unknown option {key!r} (ssehub serve --help lists them)")
        found[name] = value
    return found


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config: str | Path | None = None,
    options: Sequence[Option] = OPTIONS,
) -> Settings:
    """Every option's value: `flags` (given on the command line, by name, as text) over `environ` over the
    file `config` (else `SSEHUB_CONFIG`) over the defaults."""
    environ = os.environ if environ is None else environ
    config = config or environ.get("SSEHUB_CONFIG") or None
    from_file = read_file(config, options) if config else {}
    resolved: dict[str, _Resolved] = {}
    for option in options:
        if option.name in flags:
            raw, source = flags[option.name], f"--{option.name}"
        elif option.env in environ:
            raw, source = environ[option.env], option.env
            if option.repeat:
                raw = [item.strip() for item in raw.split(",") if item.strip()]
        elif option.name in from_file:
            raw, source = from_file[option.name], str(config)
        else:
            resolved[option.name] = _Resolved(option.default, "default")
            continue
        resolved[option.name] = _Resolved(_parse(option, raw, source), source)
    return Settings(options, resolved)
