"""The `ssehub` command line: `ssehub serve`, and `tail`, `publish` and `topics` on the client."""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TextIO

from ._version import __version__
from .config import DEFAULT_URL
from .exceptions import SSEHubError
from .options import OPTIONS, resolve

__all__ = ["main"]


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
            kwargs["action"] = argparse.BooleanOptionalAction
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
    p.add_argument("--token", default=os.environ.get("SSEHUB_TOKEN"), help="bearer token (default $SSEHUB_TOKEN)")


def _client(args: argparse.Namespace) -> Any:
    from .client import Client

    return Client(args.url, token=args.token)


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
    p.add_argument("--json", action="store_true", help='print JSON lines {"id", "event", "data"}')
    p.add_argument("--wait", action="store_true", help="wait for a topic that does not exist yet instead of failing")
    _add_client_options(p)
    p.set_defaults(run=_tail)


def _show(event: Any, as_json: bool, colour: bool) -> str:
    if as_json:
        try:
            data: Any = json.loads(event.data)
        except ValueError:
            data = event.data
        return json.dumps({"id": event.id, "event": event.event, "data": data}, ensure_ascii=False)
    data_text = event.data.replace("\n", "\n    ")
    if not colour:
        return f"{event.id} {event.event} {data_text}"
    name_colour = "33" if event.event in ("reset", "error", "cancelled") else "36"
    return f"\033[2m{event.id}\033[0m \033[1;{name_colour}m{event.event}\033[0m {data_text}"


def _tail(args: argparse.Namespace) -> int:
    from .exceptions import TopicNotFound

    colour = not args.json and sys.stdout.isatty() and "NO_COLOR" not in os.environ
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
                print(_show(event, args.json, colour), flush=True)
        except BrokenPipeError:
            # The reader went away (`ssehub tail t | head`): that is a normal end, not an error.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more may reach the closed pipe at exit
    return 0


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


def _publish(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    with _client(args) as client:
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssehub", description="Durable, resumable Server-Sent Events.")
    p.add_argument("--version", action="version", version=f"ssehub {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_tail(sub)
    _add_publish(sub)
    _add_topics(sub)
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
