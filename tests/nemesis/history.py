"""What a nemesis run records: plain, immutable values, written to and read back from JSON.

The harness fills a `History` while the run goes; the checker reads nothing else. So a
history saved by one run can be checked again later (`scripts/nemesis --check FILE`), and
the checker's tests build histories by hand.

Times are seconds since the start of the run (one monotonic clock for the whole harness).
Payloads are identities, not raw text: a publisher's event carries `{"k": "<publisher>.<n>.<i>"}`
and is recorded as that `k`; an event the harness did not write (an agent's token) is
recorded as its data text. The same function (`payload_of`) makes both, for the log and
for every delivery, so they compare equal exactly when they are the same event.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "Answer",
    "Clock",
    "Delivery",
    "Epoch",
    "Fault",
    "History",
    "Incident",
    "Limits",
    "LoggedEvent",
    "Outage",
    "Publish",
    "Reader",
    "Run",
    "Sample",
    "TERMINAL_EVENTS",
    "TopicLog",
    "payload_of",
]

#: The run's clock: seconds since it started.
Clock = Callable[[], float]

#: The terminal event of a run, and the status it closes the run's topic with.
TERMINAL_EVENTS = {"done": "completed", "error": "failed", "cancelled": "cancelled"}


def payload_of(data: str) -> str:
    """The identity of an event's data: the harness's own key, else the text itself."""
    try:
        value = json.loads(data)
    except ValueError:
        return data
    if isinstance(value, dict) and isinstance(value.get("k"), str):
        return str(value["k"])
    return data


@dataclass(frozen=True, slots=True)
class Publish:
    """One publish call of a publisher, with every retry of it (one idempotency key)."""

    publisher: str
    topic: str
    key: str
    payloads: tuple[str, ...]
    start: float
    end: float
    #: The ids the server acknowledged, one per payload; None when no attempt was acknowledged.
    ids: tuple[int, ...] | None
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    event: str
    payload: str
    t: float


@dataclass(frozen=True, slots=True)
class Reader:
    """Everything one subscriber was given, in the order it was given."""

    name: str
    client: str  # "python" (ssehub.AsyncClient) or "node" (the npm eventsource package)
    topic: str
    #: The cursor it asked to start after; None for "from the current end" (its first delivery tells).
    after: int | None
    start: float
    deliveries: tuple[Delivery, ...] = ()
    #: The stream ended by itself: the topic closed and the reader was told there is nothing more.
    finished: bool = False
    #: (opened, closed) of each stream that answered 200; closed is None for one still open at the end.
    connections: tuple[tuple[float, float | None], ...] = ()


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    event: str
    payload: str


@dataclass(frozen=True, slots=True)
class TopicLog:
    topic: str
    first_id: int
    last_id: int
    status: str
    events: tuple[LoggedEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Epoch:
    """The logs of one life of the store: a store that loses its data (Redis without persistence) starts a new one."""

    start: float
    end: float  # math.inf for the last
    logs: dict[str, TopicLog] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Run:
    """An agent run started over HTTP (its start call retried with one idempotency key)."""

    key: str
    #: The run id of every answer to the start call, retries and deliberate repeats included.
    answered: tuple[str, ...]
    start: float
    #: The status of the run document at the end (GET /runs/{id}): a run status, "not found" (404),
    #: or "http NNN" / None when it could not be read.
    status: str | None = None
    answer: str | None = None  # the completed run's result["answer"]
    cancel_requested: bool = False

    @property
    def topic(self) -> str | None:
        return f"runs/{self.answered[0]}" if self.answered else None


@dataclass(frozen=True, slots=True)
class Answer:
    """A 5xx answer a client got."""

    client: str
    method: str
    path: str
    status: int
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    target: str
    start: float
    end: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Outage:
    """A window in which the store could not be reached (by one hub or all); `end` is when it answered again."""

    cause: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Sample:
    process: str
    incarnation: int
    pid: int
    t: float
    rss_kb: int
    fds: int
    phase: str  # "baseline" (before the workload), "run", or "final" (after it, every client gone)
    #: Of `fds`: connections to the store (a pool, bounded by use), and connections accepted from clients.
    store_sockets: int = 0
    client_sockets: int = 0


@dataclass(frozen=True, slots=True)
class Incident:
    """An ERROR line in a hub's log, with the exception of the traceback that followed it, if any."""

    process: str
    line: str
    exception: str = ""
    t: float | None = None  # when it was logged, if the line says


@dataclass(frozen=True, slots=True)
class Limits:
    #: Seconds after the store answers again within which a 503 is still expected.
    grace_503: float = 1.0
    #: File descriptors a hub may hold above its baseline once every client has gone.
    fd_slack: int = 16
    #: RSS a hub may gain over the run, in KiB, beyond `rss_ratio` times its baseline.
    rss_slack_kb: int = 64 * 1024
    rss_ratio: float = 1.5


@dataclass(frozen=True, slots=True)
class History:
    store: str
    seed: int
    duration: float
    date: str = ""
    command: str = ""
    limits: Limits = Limits()
    faults: tuple[Fault, ...] = ()
    outages: tuple[Outage, ...] = ()
    publishes: tuple[Publish, ...] = ()
    readers: tuple[Reader, ...] = ()
    runs: tuple[Run, ...] = ()
    answers: tuple[Answer, ...] = ()
    epochs: tuple[Epoch, ...] = ()
    samples: tuple[Sample, ...] = ()
    incidents: tuple[Incident, ...] = ()

    # -- JSON ------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return _plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> History:
        return _build(cls, raw)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))

    @classmethod
    def load(cls, path: Path) -> History:
        return cls.from_json(json.loads(path.read_text()))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


T = TypeVar("T")

# How to rebuild the nested values of each record type from JSON.
_NESTED: dict[str, dict[str, type]] = {
    "History": {
        "faults": Fault,
        "outages": Outage,
        "publishes": Publish,
        "readers": Reader,
        "runs": Run,
        "answers": Answer,
        "epochs": Epoch,
        "samples": Sample,
        "incidents": Incident,
    },
    "Reader": {"deliveries": Delivery},
    "TopicLog": {"events": LoggedEvent},
}


def _build(cls: type[T], raw: dict[str, Any]) -> T:
    nested = _NESTED.get(cls.__name__, {})
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in raw:
            continue
        value = raw[f.name]
        if f.name in nested:
            value = tuple(_build(nested[f.name], item) for item in value)
        elif cls is History and f.name == "limits":
            value = Limits(**value)
        elif cls is Epoch and f.name == "logs":
            value = {name: _build(TopicLog, log) for name, log in value.items()}
        elif value == "inf":
            value = math.inf
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[f.name] = value
    return cls(**values)
