"""The `ssehub` command line: `ssehub serve`, the client commands (`tail`, `publish`, `topics`, `info`,
`close`, `delete`, `run`, `cancel`), and `ssehub token`, which mints a signed token.

Every failure is one line on standard error, `ssehub COMMAND: what went wrong`, and an exit code
(`EXIT_CODES`, printed by `ssehub --help`).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TextIO

from ._version import __version__
from .config import DEFAULT_URL
from .exceptions import InvalidInput, SSEHubError
from .options import OPTIONS, resolve

__all__ = ["EXIT_CODES", "main"]

#: What the exit status of a command means.
EXIT_CODES = {
    0: "success (for tail and run: the topic or run ended; run: it completed)",
    1: "an error: the hub refused the request or could not be reached (one line on standard error)",
    2: "bad usage: an unknown option or a bad value",
    3: "run: the run failed",
    4: "run: the run was cancelled",
    130: "interrupted (Ctrl-C); run leaves the run going unless --cancel-on-exit",
}


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SSEHUB_{name}", default)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the hub server",
        description=(
            "Run the hub server. Every option can also be set with the environment variable shown, or in a "
            "TOML file (--config); a flag wins over the environment, which wins over the file."
        ),
    )
    p.add_argument("--config", metavar="FILE", help="a TOML file of options, keys as the flags' names ($SSEHUB_CONFIG)")
    p.add_argument(
        "--print-config", action="store_true", help="print the effective options as TOML (secrets masked) and exit"
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        group = groups.get(option.group) or groups.setdefault(option.group, p.add_argument_group(option.group))
        default = "" if option.default in (None, False, []) else f"; default {option.default}"
        kwargs: dict[str, Any] = {
            "dest": option.attr,
            "default": argparse.SUPPRESS,  # absent: the environment, the file or the default decides
            "help": f"{option.help} (${option.env}{default})",
        }
        if option.flag:
            # `--no-auth` is a negation already: a plain switch, not --no-auth / --no-no-auth.
            kwargs["action"] = "store_true" if option.name.startswith("no-") else argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = option.metavar or option.name.split("-")[-1].upper()
            if option.repeat:
                kwargs["action"] = "append"
        group.add_argument(f"--{option.name}", **kwargs)
    p.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .server import ServeOptions, serve

    given = {o.name: getattr(args, o.attr) for o in OPTIONS if hasattr(args, o.attr)}
    settings = resolve(given, config=args.config)
    if args.print_config:
        sys.stdout.write(settings.to_toml())
        return 0
    serve(ServeOptions.from_settings(settings))
    return 0


# -- client commands --------------------------------------------------------------------------------------


def _add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=_env("URL", DEFAULT_URL), help=f"the hub's base URL (default {DEFAULT_URL})")
    p.add_argument(
        "--token", default=os.environ.get("SSEHUB_TOKEN"), help="an API key or token (default $SSEHUB_TOKEN)"
    )
    p.add_argument(
        "--token-command",
        default=os.environ.get("SSEHUB_TOKEN_COMMAND"),
        metavar="COMMAND",
        help="a command that prints a fresh token, run again when the hub says the token expired "
        "(default $SSEHUB_TOKEN_COMMAND)",
    )


def _token_command(command: str) -> Callable[[], str]:
    def fresh() -> str:
        try:
            done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60, check=False)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            raise InvalidInput(f"--token-command: {exc}") from None
        token = done.stdout.strip()
        if done.returncode != 0 or not token:
            detail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}, no token printed"]
            raise InvalidInput(f"--token-command failed: {detail[0]}")
        return token

    return fresh


def _client(args: argparse.Namespace) -> Any:
    from .client import Client

    token: Any = _token_command(args.token_command) if args.token_command else args.token
    return Client(args.url, token=token)


def _non_negative(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return int(text)


def _add_tail(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tail",
        help="follow a topic's events",
        description="Follow a topic like tail -f, resuming across dropped connections; exits 0 when the topic closes.",
    )
    p.add_argument("topic")
    p.add_argument("--after", type=_non_negative, help="start after this id (0: from the start; default: new events)")
    _add_format(p)
    p.add_argument("--wait", action="store_true", help="wait for a topic that does not exist yet instead of failing")
    _add_client_options(p)
    p.set_defaults(run=_tail)


FORMATS = ("text", "json", "raw")


def _add_format(p: argparse.ArgumentParser, json_alias: bool = True) -> None:
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help='text: "ID EVENT DATA" lines (coloured on a terminal); json: JSON lines {"id", "event", "data"}; '
        "raw: each event's data as it was sent, one per line",
    )
    if json_alias:
        p.add_argument("--json", dest="format", action="store_const", const="json", help="the same as --format json")


def _show(event: Any, fmt: str, colour: bool) -> str:
    if fmt == "json":
        try:
            data: Any = json.loads(event.data)
        except ValueError:
            data = event.data
        return json.dumps({"id": event.id, "event": event.event, "data": data}, ensure_ascii=False)
    if fmt == "raw":
        return str(event.data)
    data_text = event.data.replace("\n", "\n    ")
    if not colour:
        return f"{event.id} {event.event} {data_text}"
    name_colour = "33" if event.event in ("reset", "error", "cancelled") else "36"
    return f"\033[2m{event.id}\033[0m \033[1;{name_colour}m{event.event}\033[0m {data_text}"


def _tail(args: argparse.Namespace) -> int:
    from .exceptions import TopicNotFound

    colour = args.format == "text" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    with _client(args) as client:
        if not args.wait:
            try:
                client.topic(args.topic)
            except TopicNotFound:
                raise TopicNotFound(
                    f"no topic {args.topic!r} at {client.base_url} (use --wait to wait for it)"
                ) from None
        try:
            for event in client.subscribe(args.topic, after=args.after):
                print(_show(event, args.format, colour), flush=True)
        except BrokenPipeError:
            _reader_gone()
    return 0


def _reader_gone() -> None:
    # The reader went away (`ssehub tail t | head`): that is a normal end, not an error.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more may reach the closed pipe at exit


def _add_publish(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "publish",
        help="publish events to a topic",
        description=(
            "Publish DATA as one event, or with - one event per non-empty line of standard input (sent in "
            "batches); prints the ids. DATA is sent as JSON when it parses as JSON, else as a string."
        ),
    )
    p.add_argument("topic")
    p.add_argument("data", nargs="?", default="-", help="the event's data, or - to read lines from standard input")
    p.add_argument("--event", default="message", help="event name (default message)")
    p.add_argument("--key", help="idempotency key: publishing again with the same key appends nothing new")
    p.add_argument(
        "--ndjson",
        action="store_true",
        help='stream standard input over one request: each line a JSON object {"event": ..., "data": ...}, '
        "appended as it arrives; prints what was appended as JSON {first_id, last_id, count, lines}",
    )
    _add_client_options(p)
    p.set_defaults(run=_publish)


def _data(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _line_batches(stream: IO[str], size: int = 500) -> Iterator[list[str]]:
    """Non-empty lines of `stream`, grouped: a batch is whatever has arrived, up to `size` lines.

    A reader thread fills a queue, so a slow producer (`tail -f log | ssehub publish t -`)
    gets each line sent as it comes, while a fast one gets large batches.
    """
    lines: queue.Queue[str | None] = queue.Queue(maxsize=4 * size)

    def read() -> None:
        try:
            for line in stream:
                line = line.rstrip("\r\n")
                if line.strip():
                    lines.put(line)
        finally:
            lines.put(None)

    threading.Thread(target=read, name="ssehub-stdin", daemon=True).start()
    while (first := lines.get()) is not None:
        batch = [first]
        while len(batch) < size:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                yield batch
                return
            batch.append(line)
        yield batch


def _ndjson_event(line: str, number: int) -> tuple[str, Any]:
    """The (event, data) of one line of `publish --ndjson`, checked as the hub checks it."""
    try:
        item = json.loads(line)
    except ValueError:
        raise InvalidInput(f"line {number} of standard input is not JSON") from None
    if not isinstance(item, dict) or set(item) - {"event", "data"} or not isinstance(item.get("event", ""), str):
        raise InvalidInput(f'line {number} of standard input is not {{"event": "...", "data": ...}}')
    return item.get("event", "message"), item.get("data")


def _publish_stream(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    with client.stream(args.topic, idempotency_key=args.key) as stream:
        # Read line by line (not with the file's read-ahead), so each one goes out as it arrives.
        for number, line in enumerate(iter(sys.stdin.readline, ""), 1):
            if line.strip():
                event, data = _ndjson_event(line, number)
                stream.send(data, event=event)
    result = stream.result
    out.write(json.dumps({k: getattr(result, k) for k in ("first_id", "last_id", "count", "lines")}) + "\n")
    return 0


def _publish(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    with _client(args) as client:
        if args.ndjson:
            if args.data != "-":
                raise InvalidInput("--ndjson reads standard input: give no DATA (or -)")
            return _publish_stream(args, client, out)
        if args.data != "-":
            out.write(f"{client.publish(args.topic, args.event, _data(args.data), idempotency_key=args.key)}\n")
            return 0
        for n, batch in enumerate(_line_batches(sys.stdin)):
            key = None if args.key is None else f"{args.key}:{n}"
            ids = client.publish_many(args.topic, [(args.event, _data(line)) for line in batch], idempotency_key=key)
            out.write("".join(f"{i}\n" for i in ids))
            out.flush()
    return 0


def _add_topics(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("topics", help="list topics", description="List topics: last id, status, subscribers.")
    p.add_argument("--prefix", default="", help="only topics whose name starts with this")
    _add_client_options(p)
    p.set_defaults(run=_topics)


def _topics(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.topics(args.prefix)
    rows = [("TOPIC", "LAST_ID", "STATUS", "SUBSCRIBERS")]
    rows += [(t.name, str(t.last_id), t.status, str(t.subscribers)) for t in found]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip())
    return 0


# -- one topic: info, close, delete ---------------------------------------------------------------------


def _add_topic_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="show a topic", description="Show a topic: ids, status, subscribers, metadata.")
    p.add_argument("topic")
    p.add_argument("--json", action="store_true", help="print the server's JSON description")
    _add_client_options(p)
    p.set_defaults(run=_info)

    p = sub.add_parser(
        "close", help="close a topic", description="Close a topic with a final status; its subscribers finish."
    )
    p.add_argument("topic")
    p.add_argument("--status", choices=("completed", "failed", "cancelled"), default="completed")
    _add_client_options(p)
    p.set_defaults(run=_close)

    p = sub.add_parser("delete", help="delete a topic", description="Delete a topic and all its events.")
    p.add_argument("topic")
    _add_client_options(p)
    p.set_defaults(run=_delete)


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        t = client.topic(args.topic)
    if args.json:
        print(json.dumps(t.as_dict(t.subscribers), ensure_ascii=False))
        return 0
    rows = [
        ("topic", t.name),
        ("status", t.status),
        ("events", f"{t.first_id}..{t.last_id}" if t.last_id >= t.first_id else "none"),
        ("last id", str(t.last_id)),
        ("subscribers", str(t.subscribers)),
        ("created", _when(t.created)),
        ("updated", _when(t.updated)),
        ("closed", _when(t.closed_at)),
    ]
    rows += [(f"meta.{k}", json.dumps(v, ensure_ascii=False)) for k, v in sorted(t.meta.items())]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _close(args: argparse.Namespace) -> int:
    with _client(args) as client:
        t = client.close_topic(args.topic, args.status)
    print(f"{t.name} {t.status} at id {t.last_id}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_topic(args.topic)
    print(f"deleted {args.topic}")
    return 0


# -- runs: run, cancel -------------------------------------------------------------------------------------------


def _add_run_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="start an agent run and stream its events",
        description=(
            "Start a run of AGENT with the JSON BODY and print its events as they come, resuming across dropped "
            "connections, until the run ends. Ctrl-C detaches and leaves the run going (its id is on standard "
            "error; follow it again with `ssehub tail runs/ID --after N`); with --cancel-on-exit, Ctrl-C "
            "cancels it. Exits 0 when the run completed, 3 when it failed, 4 when it was cancelled."
        ),
    )
    p.add_argument("agent")
    p.add_argument("--json", dest="body", metavar="BODY", default="{}", help="the request body, a JSON object")
    _add_format(p, json_alias=False)  # --json is the body here
    p.add_argument("--cancel-on-exit", action="store_true", help="cancel the run when interrupted (Ctrl-C)")
    p.add_argument("--key", help="idempotency key: the same key finds the run the first call started")
    _add_client_options(p)
    p.set_defaults(run=_run)

    p = sub.add_parser("cancel", help="cancel a run", description="Cancel a run; prints its status.")
    p.add_argument("run_id", metavar="RUN")
    _add_client_options(p)
    p.set_defaults(run=_cancel)


_RUN_EXIT = {"completed": 0, "failed": 3, "cancelled": 4}


def _run(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.body)
    except ValueError as exc:
        raise InvalidInput(f"--json: not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("--json: the body must be a JSON object")
    colour = args.format == "text" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    with _client(args) as client:
        run_id = client.start_run(args.agent, body, idempotency_key=args.key)["id"]
        print(f"run {run_id}", file=sys.stderr, flush=True)
        last = 0
        try:
            for event in client.subscribe_run(run_id):
                last = event.id
                try:
                    print(_show(event, args.format, colour), flush=True)
                except BrokenPipeError:
                    _reader_gone()
                    break
        except KeyboardInterrupt:
            if args.cancel_on_exit:
                status = client.cancel_run(run_id)["status"]
                print(f"run {run_id}: cancelled ({status})", file=sys.stderr)
            else:
                print(
                    f"run {run_id}: detached; it goes on (ssehub tail runs/{run_id} --after {last}, "
                    f"or ssehub cancel {run_id})",
                    file=sys.stderr,
                )
            return 130
        status = client.run(run_id)["status"]
    return _RUN_EXIT.get(status, 1)


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.cancel_run(args.run_id)
    print(f"{answer['id']} {answer['status']}")
    return 0


# -- tokens -------------------------------------------------------------------------------------------------


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    seconds = float(match[1]) * _UNITS[match[2]] if match else 0.0
    if seconds <= 0 or seconds > 366 * 86400:
        raise argparse.ArgumentTypeError(f"must be a duration such as 90, 90s, 30m, 1h or 7d, got {text!r}")
    return seconds


def _add_token(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "token",
        help="mint a signed token (for development, or a back end without a JWT library)",
        description=(
            "Print a JWT for a hub started with the same --jwt-secret (or, with --private-key, the public key of "
            "that key pair). Patterns: * matches within one path segment, ** across segments."
        ),
    )
    p.add_argument("--subscribe", action="append", default=[], metavar="PATTERN", help="topics it may read")
    p.add_argument("--publish", action="append", default=[], metavar="PATTERN", help="topics it may write")
    p.add_argument("--cancel", action="append", default=[], metavar="PATTERN", help="run topics it may cancel")
    p.add_argument("--agents", action="append", default=[], metavar="NAME", help="agents it may start")
    p.add_argument("--sub", help="the subject: the runs it starts are its own")
    p.add_argument("--ttl", type=_duration, default=3600.0, help="how long it is valid: 90s, 30m, 1h, 7d (default 1h)")
    p.add_argument("--audience", default=os.environ.get("SSEHUB_JWT_AUDIENCE"), help="aud ($SSEHUB_JWT_AUDIENCE)")
    p.add_argument("--issuer", default=os.environ.get("SSEHUB_JWT_ISSUER"), help="iss ($SSEHUB_JWT_ISSUER)")
    p.add_argument("--secret", default=os.environ.get("SSEHUB_JWT_SECRET"), help="HS256 secret ($SSEHUB_JWT_SECRET)")
    p.add_argument(
        "--private-key", metavar="FILE", help="sign with this PEM private key instead (needs ssehub[crypto])"
    )
    p.add_argument("--algorithm", help="HS256 (default with --secret), RS256 (default with an RSA key), ES256, ...")
    p.set_defaults(run=_token)


def _token(args: argparse.Namespace) -> int:
    from .access import load_private_key, mint_token

    key: Any
    if args.private_key:
        try:
            with open(args.private_key, "rb") as f:
                pem = f.read()
        except OSError as exc:
            raise InvalidInput(f"--private-key: cannot read {args.private_key}: {exc.strerror or exc}") from None
        key, algorithm = load_private_key(pem)
        algorithm = args.algorithm or algorithm
    elif args.secret:
        key, algorithm = args.secret, args.algorithm or "HS256"
    else:
        raise InvalidInput("give --secret (or $SSEHUB_JWT_SECRET), or --private-key FILE")
    token = mint_token(
        key,
        subscribe=args.subscribe,
        publish=args.publish,
        cancel=args.cancel,
        agents=args.agents,
        subject=args.sub,
        ttl=args.ttl,
        audience=args.audience,
        issuer=args.issuer,
        algorithm=algorithm,
    )
    print(token)
    return 0


def parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    p = argparse.ArgumentParser(
        prog="ssehub",
        description="Durable, resumable Server-Sent Events.",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ssehub {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_tail(sub)
    _add_publish(sub)
    _add_topics(sub)
    _add_topic_commands(sub)
    _add_run_commands(sub)
    _add_token(sub)
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
