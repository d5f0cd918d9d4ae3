"""Structured log lines: one line per request, stream and run, as plain `key=value` text or as JSON.

    log_fields(log, "stream", topic="t", after=0, events=12, bytes=3400, seconds=8.2, ended="closed")

writes, with any formatter, a message that carries every field (`stream topic=t after=0 events=12 ...`),
and keeps the fields on the record (`record.ssehub`), so that `JSONFormatter` can write them as one
JSON object per line instead (`ssehub serve --log-format json`):

    {"time": "2026-01-31T12:00:00.123Z", "level": "info", "logger": "ssehub.access", "msg": "stream",
     "topic": "t", "after": 0, "events": 12, "bytes": 3400, "seconds": 8.2, "ended": "closed"}

Lines that are not ours (uvicorn's, asyncio's) become `{"msg": "<their text>"}` with the same envelope,
their traceback, if any, in `"exc"`. `configure` sets up the root logger for `ssehub serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FORMATS",
    "JSONFormatter",
    "LoopBufferedHandler",
    "PlainFormatter",
    "configure",
    "log_fields",
    "plain_fields",
]

FORMATS = ("plain", "json")
_PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVEL_NAMES = {level: logging.getLevelName(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING)}


# A value is quoted only when a reader could not tell where it ends.
_NEEDS_QUOTES = re.compile(r'[ "=\n\\]')


def _plain_value(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        # Three decimals, but a value above nothing is never written as 0.0: a request that took 123 µs
        # reads seconds=0.000123, three significant digits.
        rounded = round(value, 3)
        return repr(rounded) if rounded or not value else f"{value:.3g}"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if text == "" or _NEEDS_QUOTES.search(text) is not None:
        return json.dumps(text, ensure_ascii=False)
    return text


#: Strings as `_plain_value` writes them: an access line per request writes the same methods, paths and
#: addresses over and over, and a look-up here costs less than the search for a character to quote.
_written: dict[str, str] = {}


def _plain_text(text: str) -> str:
    written = _written.get(text)
    if written is None:
        written = _plain_value(text)
        if len(_written) >= 4096:
            _written.clear()  # a bound on what a stream of distinct paths may keep
        _written[text] = written
    return written


def plain_fields(fields: Mapping[str, Any]) -> str:
    """`key=value` pairs, in order; None values are left out."""
    # The common types without a call each (a hot path: see `_written`).
    return " ".join(
        [
            f"{key}={value}"
            if type(value) is int
            else f"{key}={_plain_text(value) if type(value) is str else _plain_value(value)}"
            for key, value in fields.items()
            if value is not None
        ]
    )


class _Fields:
    """Rendered only if the line is written: a disabled logger costs no formatting."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return plain_fields(self.fields)


def log_fields(logger: logging.Logger, what: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log the line `what` with its fields (see the module's docstring)."""
    if logger.isEnabledFor(level):
        log_mapping(logger, what, {k: v for k, v in fields.items() if v is not None}, level)


def log_mapping(logger: logging.Logger, what: str, fields: dict[str, Any], level: int = logging.INFO) -> None:
    """`log_fields` for fields already in a dict with no None values (taken as they are: a hot path's)."""
    if not logger.isEnabledFor(level):
        return
    handler = _sole_handler(logger, level)
    if handler is not None:
        handler.write_fields(logger.name, level, what, fields)
        return
    # The record is made here rather than by `logger.log`, which would walk the stack for the caller's
    # file and line (no format of ours shows them).
    record = logger.makeRecord(
        logger.name, level, "", 0, "%s %s", (what, _Fields(fields)), None, extra={"ssehub": {"msg": what, **fields}}
    )
    logger.handle(record)


def _sole_handler(logger: logging.Logger, level: int) -> LoopBufferedHandler | None:
    """The handler of `configure` when it is the only place `logger`'s lines go, with nothing to filter them
    on the way and one of our own formats: then a line can be written without a LogRecord, the same text
    `logging` would have written. None when anything else takes part (a test's capture, a filter, ...)."""
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        if current.handlers:
            if found is not None or len(current.handlers) != 1:
                return None
            found = current.handlers[0]
        if not current.propagate:
            break
        current = current.parent
    if type(found) is not LoopBufferedHandler or found.filters or level < found.level:
        return None
    if type(found.formatter) not in (PlainFormatter, JSONFormatter) or logging.root.manager.disable >= level:
        return None
    return found


class PlainFormatter(logging.Formatter):
    """`time level logger: message`, the time's text made once per second rather than once per line."""

    def __init__(self) -> None:
        super().__init__(_PLAIN)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        """The time `created` as `%(asctime)s` shows it."""
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        return f"{self._stamp},{int((created - second) * 1000):03d}"

    def line(self, created: float, level: int, name: str, what: str, fields: Mapping[str, Any]) -> str:
        """What `format` makes of a record of `log_fields`, from its parts."""
        level_name = _LEVEL_NAMES.get(level) or logging.getLevelName(level)
        return f"{self.stamp(created)} {level_name} {name}: {what} {plain_fields(fields)}"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the line's own fields."""

    @staticmethod
    def _start(seconds: float, levelname: str, name: str) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"
        return {"time": stamp, "level": levelname.lower(), "logger": name}

    def line(self, created: float, level: int, name: str, what: str, fields: Mapping[str, Any]) -> str:
        """What `format` makes of a record of `log_fields`, from its parts."""
        line = self._start(created, logging.getLevelName(level), name)
        line.update(msg=what, **fields)
        return json.dumps(line, ensure_ascii=False, default=str)

    def format(self, record: logging.LogRecord) -> str:
        line = self._start(record.created, record.levelname, record.name)
        fields = getattr(record, "ssehub", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["msg"] = record.getMessage()
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class LoopBufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes what the event loop's thread logs in batches, a few times a second.

    An access line per request made a write to standard error per request, and a write lets go of the GIL:
    with the SQLite writer thread waiting for it, each line cost the loop a thread switch. The hot lines of
    `write_fields` are kept as their parts and made into text together, `FLUSH_DELAY` seconds after the
    first of them (or once `FLUSH_LINES` wait), in one write: a line made among a request's work costs
    about three times what it does in a run of them. Lines logged on any other thread, or with no loop
    running, and every LogRecord (uvicorn's, warnings) are written at once, after whatever is pending, and
    `logging.shutdown` at exit writes the rest: only a process killed outright loses its last access lines.
    """

    #: Seconds an access line may wait to be written, at most.
    FLUSH_DELAY = 0.02
    #: Lines that, waiting, are written at once.
    FLUSH_LINES = 1000

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        #: Lines of text, and the parts of hot lines still to be made into text.
        self._pending: list[str | tuple[float, int, str, str, Mapping[str, Any]]] = []
        self._flusher: asyncio.AbstractEventLoop | None = None  # the loop that will write them

    def emit(self, record: logging.LogRecord) -> None:
        # A record (uvicorn's, a warning, anything but the hot lines of `write_fields`) is written at once,
        # after what is pending: the loop may never turn again (the last lines before a process exits).
        try:
            line = self.format(record) + self.terminator
            with self.lock:  # type: ignore[union-attr]
                self._pending.append(line)
                self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_fields(self, name: str, level: int, what: str, fields: Mapping[str, Any]) -> None:
        """Write the line a record of `log_fields(logging.getLogger(name), what, level, **fields)` makes,
        without making the record (see `log_mapping`); `fields` must not change after."""
        with self.lock:  # type: ignore[union-attr]
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            pending = self._pending
            pending.append((time.time(), level, name, what, fields))
            if loop is None or (self._flusher is not None and self._flusher is not loop):
                self.flush()
            elif self._flusher is None:
                self._flusher = loop
                loop.call_later(self.FLUSH_DELAY, self.flush)
            elif len(pending) >= self.FLUSH_LINES:
                self.flush()  # the timer set finds nothing, or the lines that came after

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flusher = None
            if self._pending:
                formatter = self.formatter
                assert isinstance(formatter, PlainFormatter | JSONFormatter)
                end = self.terminator
                text = "".join(
                    [item if isinstance(item, str) else formatter.line(*item) + end for item in self._pending]
                )
                self._pending.clear()
                try:
                    self.stream.write(text)
                except Exception:
                    pass  # as logging does: a log that cannot be written must not stop the server
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()


def configure(level: str = "info", fmt: str = "plain") -> None:
    """Send every log line (ssehub's, uvicorn's, asyncio's) to standard error in the format `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = LoopBufferedHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Neither format shows the process or the thread: not looking them up makes every record cheaper.
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    root.setLevel(level.upper())
    # uvicorn's own loggers then write through this handler too (uvicorn is given no logging config).
    for name in ("uvicorn", "uvicorn.error"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
    # Except its access lines: the hub writes its own (`ssehub.access`, `--no-access-log`). A worker process of
    # `--workers N` calls this after uvicorn has silenced them, and uvicorn's protocol takes a logger with
    # somewhere to write as its access log on, which writes a second line per request and turns off the
    # connection's publish shortcut (`ssehub.connections`).
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
