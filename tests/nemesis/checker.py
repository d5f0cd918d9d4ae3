"""The checker: pure functions from a recorded `History` to a `Verdict`.

It knows nothing of processes or sockets; it reads what the clients were told and what the
logs hold at the end (and, for a store that lost its data, what they held just before), and
says precisely what broke the promise "nothing lost, nothing shown twice":

    lost            an acknowledged event is not in the log at the id it was acknowledged with
    stored_twice    one payload is stored at two ids of one log (a retry appended again)
    unknown_event   the log holds an event of a publisher topic that no publisher sent
    log_hole        a log's ids do not run contiguously from its first id to its last
    gap             a reader skipped ids without being told (no `event: reset`)
    duplicate       a reader was given the same id of the same log twice
    reorder         a reader was given an id lower than one it already had
    wrong_payload   a reader was given, at an id, something the log does not hold there
    silent_reset    the store lost its log and a reader went on in the new one without a reset
    bad_reset       a reset that rewinds, or skips events the log still holds
    incomplete      a reader did not read its topic to the end, or never finished
    run_not_terminal, run_twice, run_text   a run that did not end, a retried start that
                    started two runs, a completed run whose streamed text is not its answer
    server_error    a 5xx other than 503 answered to a client
    late_503        a 503 for a request made more than `grace_503` s after the store answered again
                    (and not while its hub was shutting down: a draining hub answers a stream
                    still open, or a request on a kept-alive connection, 503 with Retry-After)
    hub_error       an ERROR line (and traceback) in a hub's log
    fd_leak, memory_growth   a hub holding more than it did before the run, once every client left

Unacknowledged publishes may be absent or present once, never twice (`stored_twice`).
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .history import TERMINAL_EVENTS, Delivery, Epoch, History, LoggedEvent, Publish, Reader, Run, TopicLog

__all__ = [
    "Verdict",
    "Violation",
    "check",
    "check_answers",
    "check_incidents",
    "check_logs",
    "check_publishes",
    "check_reader",
    "check_resources",
    "check_runs",
]


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> Counter[str]:
        return Counter(v.kind for v in self.violations)


def check(history: History) -> Verdict:
    """Every check over the whole history; `figures` carries what the report prints."""
    verdict = Verdict()
    for part in (
        check_publishes(history),
        check_logs(history),
        check_readers(history),
        check_runs(history),
        check_answers(history),
        check_resources(history),
        check_incidents(history),
    ):
        verdict.violations += part.violations
        verdict.figures.update(part.figures)
    verdict.figures["faults"] = dict(sorted(Counter(f.kind for f in history.faults).items()))
    verdict.figures["violations"] = dict(sorted(verdict.kinds().items()))
    return verdict


# -- the logs ----------------------------------------------------------------------------------------------


def _epochs(history: History) -> tuple[Epoch, ...]:
    return history.epochs or (Epoch(0.0, math.inf),)


def _by_id(log: TopicLog | None) -> dict[int, LoggedEvent]:
    return {} if log is None else {e.id: e for e in log.events}


def _publisher_topics(history: History) -> set[str]:
    return {p.topic for p in history.publishes}


def _where(epochs: tuple[Epoch, ...], index: int) -> str:
    if len(epochs) == 1:
        return "the log"
    if index == len(epochs) - 1:
        return f"the log begun at {epochs[index].start:.1f}s"
    return f"the log lost at {epochs[index].end:.1f}s"


def check_publishes(history: History) -> Verdict:
    """Every acknowledged event is in the log, at the ids it was acknowledged with."""
    epochs = _epochs(history)
    logs = [{topic: _by_id(log) for topic, log in e.logs.items()} for e in epochs]
    verdict = Verdict()
    acked = unacked = present = trimmed = lost = 0
    for p in history.publishes:
        if p.ids is None:
            unacked += len(p.payloads)
            present += sum(1 for payload in p.payloads if _stored_anywhere(history, p.topic, payload))
            continue
        if len(p.ids) != len(p.payloads):
            acked += len(p.payloads)
            lost += len(p.payloads)
            verdict.violations.append(
                Violation(
                    "lost",
                    f"{p.topic} key {p.key}",
                    f"{len(p.payloads)} events were acknowledged with {len(p.ids)} ids {list(p.ids)}",
                )
            )
            continue
        candidates = [i for i, e in enumerate(epochs) if e.start <= p.end and e.end >= p.start] or [len(epochs) - 1]
        for payload, event_id in zip(p.payloads, p.ids, strict=True):
            acked += 1
            if any(_payload(logs[i].get(p.topic, {}).get(event_id)) == payload for i in candidates):
                continue
            last = epochs[candidates[-1]].logs.get(p.topic)
            if last is not None and event_id < last.first_id:
                trimmed += 1  # dropped by retention since, as configured
                continue
            lost += 1
            held = _payload(logs[candidates[-1]].get(p.topic, {}).get(event_id))
            elsewhere = _ids_of(epochs[candidates[-1]].logs.get(p.topic), payload)
            detail = (
                f"{p.publisher} was acknowledged id {event_id} for {payload} at {p.end:.1f}s "
                f"(after {_attempts(p.attempts)}); "
                f"{_where(epochs, candidates[-1])} holds {held or 'nothing'} at {event_id}"
            )
            if elsewhere:
                detail += f" and has {payload} at {elsewhere}"
            verdict.violations.append(Violation("lost", f"{p.topic} id {event_id}", detail))
    verdict.figures.update(
        published=sum(len(p.payloads) for p in history.publishes),
        acknowledged=acked,
        unacknowledged=unacked,
        unacknowledged_present=present,
        unacknowledged_absent=unacked - present,
        trimmed=trimmed,
        lost=lost,
    )
    return verdict


def _attempts(n: int) -> str:
    return f"{n} attempt{'s' if n != 1 else ''}"


def _payload(event: LoggedEvent | None) -> str | None:
    return None if event is None else event.payload


def _ids_of(log: TopicLog | None, payload: str) -> list[int]:
    return [] if log is None else [e.id for e in log.events if e.payload == payload]


def _stored_anywhere(history: History, topic: str, payload: str) -> bool:
    return any(_ids_of(e.logs.get(topic), payload) for e in _epochs(history))


def check_logs(history: History) -> Verdict:
    """Each log: contiguous ids, every event of a publisher topic sent by a publisher, and none stored twice."""
    verdict = Verdict()
    sent: defaultdict[str, list[Publish]] = defaultdict(list)  # payload -> the calls that sent it (repeats too)
    for p in history.publishes:
        for payload in p.payloads:
            sent[payload].append(p)
    topics = _publisher_topics(history)
    epochs = _epochs(history)
    twice = 0
    for index, epoch in enumerate(epochs):
        for topic, log in sorted(epoch.logs.items()):
            ids = [e.id for e in log.events]
            expected = list(range(log.first_id, log.last_id + 1))
            if ids != expected:
                missing = sorted(set(expected) - set(ids))
                extra = sorted(set(ids) - set(expected))
                verdict.violations.append(
                    Violation(
                        "log_hole",
                        topic,
                        f"{_where(epochs, index)} runs {log.first_id}..{log.last_id} but "
                        f"misses {_ranges(missing) or 'nothing'}, has extra {_ranges(extra) or 'nothing'}",
                    )
                )
            if topic not in topics:
                continue
            positions: defaultdict[str, list[int]] = defaultdict(list)
            for e in log.events:
                positions[e.payload].append(e.id)
            for payload, at in positions.items():
                calls = sent.get(payload)
                if not calls:
                    verdict.violations.append(
                        Violation("unknown_event", f"{topic} id {at[0]}", f"no publisher sent {payload!r}")
                    )
                    continue
                if len(at) > 1:
                    twice += len(at) - 1
                    acks = [str(list(c.ids)) for c in calls if c.ids is not None]
                    answer = f"acknowledged as {' and '.join(acks)}" if acks else "never acknowledged"
                    p = calls[-1]
                    how = "one call" if len(calls) == 1 else f"the same call made {len(calls)} times"
                    verdict.violations.append(
                        Violation(
                            "stored_twice",
                            f"{topic} ids {at}",
                            f"{payload} is stored {len(at)} times in {_where(epochs, index)}: {how} by {p.publisher} "
                            f"with key {p.key}, {_attempts(p.attempts)} in all, {answer}",
                        )
                    )
    verdict.figures["stored_twice"] = twice
    return verdict


def _ranges(ids: Iterable[int]) -> str:
    out: list[str] = []
    for i in sorted(ids):
        if out and out[-1].split("..")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('..')[0]}..{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


# -- the readers -------------------------------------------------------------------------------------------


@dataclass
class _ReaderFigures:
    delivered: int = 0
    missed: int = 0  # ids skipped silently
    duplicated: int = 0
    reordered: int = 0
    resets: list[dict[str, Any]] = field(default_factory=list)
    worst_reconnect: float = 0.0


def _same(logged: LoggedEvent | None, d: Delivery) -> bool:
    return logged is not None and logged.payload == d.payload and logged.event == d.event


def check_reader(reader: Reader, epochs: tuple[Epoch, ...]) -> tuple[list[Violation], _ReaderFigures]:
    """One reader's sequence: a gap-free, duplicate-free, in-order prefix of its topic's log,
    with an `event: reset` exactly where the log was lost, and read to the end."""
    logs = [_by_id(e.logs.get(reader.topic)) for e in epochs]
    out: list[Violation] = []
    fig = _ReaderFigures()
    name = f"{reader.name} ({reader.client}) on {reader.topic}"
    epoch = next((i for i, e in enumerate(epochs) if reader.start < e.end), len(epochs) - 1)
    first = next((d.id for d in reader.deliveries if d.event != "reset"), 1)
    cursor = reader.after if reader.after is not None else first - 1
    seen: set[tuple[int, int]] = set()
    reset_from: int | None = None  # the cursor before a reset whose next delivery has not come yet
    reset_at = told = -math.inf  # when the pending reset came, and when the last one did
    for d in reader.deliveries:
        if d.event == "reset":
            if reset_from is None:
                reset_from, reset_at = cursor, d.t
            told = d.t
            fig.resets.append({"reader": reader.name, "t": round(d.t, 3), "from": cursor, "to": d.id})
            cursor = d.id
            continue
        fig.delivered += 1
        if not _same(logs[epoch].get(d.id), d):
            later = next((k for k in range(epoch + 1, len(logs)) if _same(logs[k].get(d.id), d)), None)
            if later is not None:
                if reset_from is not None:
                    fig.resets[-1]["new_log"] = True
                elif cursor > 0:
                    out.append(
                        Violation(
                            "silent_reset",
                            name,
                            f"had read to id {cursor} of {_where(epochs, epoch)}, then was given id {d.id} of "
                            f"{_where(epochs, later)} with no event: reset before it"
                            + (f" (ids {_ranges(range(1, d.id))} of the new log never shown)" if d.id > 1 else ""),
                        )
                    )
                    fig.missed += d.id - 1
                    cursor = d.id - 1
                else:
                    cursor = 0  # it had nothing of the lost log: the new one starts at 1 for it
                epoch, reset_from = later, None
            else:
                held = logs[epoch].get(d.id)
                stale = next((k for k in range(epoch) if _same(logs[k].get(d.id), d)), None)
                detail = f"was given {d.event} {d.payload[:60]!r} as id {d.id} at {d.t:.1f}s; {_where(epochs, epoch)} "
                detail += f"holds {held.event} {held.payload[:60]!r} there" if held else "has no such id"
                if stale is not None:
                    detail += f" (it is id {d.id} of {_where(epochs, stale)})"
                out.append(Violation("wrong_payload", name, detail))
        if reset_from is not None:
            # A reset within one log: it may only skip what retention has dropped.
            if cursor < reset_from:
                out.append(
                    Violation(
                        "bad_reset",
                        name,
                        f"a reset at {reset_at:.1f}s rewound the cursor from {reset_from} to {cursor}",
                    )
                )
            else:
                skipped = [i for i in range(reset_from + 1, cursor + 1) if i in logs[epoch]]
                if skipped:
                    out.append(
                        Violation(
                            "bad_reset",
                            name,
                            f"a reset at {reset_at:.1f}s moved the cursor from {reset_from} to {cursor}, skipping ids "
                            f"{_ranges(skipped)} that {_where(epochs, epoch)} holds",
                        )
                    )
            reset_from = None
        key = (epoch, d.id)
        if key in seen:
            fig.duplicated += 1
            out.append(Violation("duplicate", name, f"was given id {d.id} a second time at {d.t:.1f}s"))
        elif d.id > cursor + 1:
            fig.missed += d.id - cursor - 1
            out.append(
                Violation(
                    "gap",
                    name,
                    f"was given id {d.id} right after id {cursor} at {d.t:.1f}s: ids "
                    f"{_ranges(range(cursor + 1, d.id))} skipped silently",
                )
            )
        elif d.id <= cursor:
            fig.reordered += 1
            out.append(Violation("reorder", name, f"was given id {d.id} after id {cursor} at {d.t:.1f}s"))
        seen.add(key)
        cursor = max(cursor, d.id)
    final = epochs[-1].logs.get(reader.topic)
    end = final.last_id if final is not None else 0
    behind = epoch != len(epochs) - 1  # still on a log the store has lost
    if behind and _finished_before_loss(reader, epochs[epoch], cursor):
        pass  # it had read all of a log that had ended, and was gone, before the store lost it
    elif behind and cursor > 0 and told < epochs[epoch].end - 1.0:
        detail = (
            f"read to id {cursor} of {_where(epochs, epoch)} and was never told it was lost (no event: reset)"
            + (", then was answered as if it had read everything" if reader.finished else "")
            + (f"; it never saw the {end} events of the new log" if end else "")
        )
        out.append(Violation("silent_reset", name, detail))
    elif behind and end > 0:
        out.append(Violation("incomplete", name, f"never read the new log, which ends at id {end}"))
    elif final is None:
        pass  # its topic went with the store's data (and it was told): it waits for a topic that does not exist
    elif not reader.finished:
        out.append(Violation("incomplete", name, f"never finished: it read to id {cursor} of {end}"))
    elif cursor != end:
        out.append(Violation("incomplete", name, f"finished at id {cursor}, but the log ends at {end}"))
    opened = sorted(reader.connections, key=lambda c: c[0])
    for (_, closed), (reopened, _) in itertools.pairwise(opened):
        if closed is not None:
            fig.worst_reconnect = max(fig.worst_reconnect, reopened - closed)
    return out, fig


def _finished_before_loss(reader: Reader, epoch: Epoch, cursor: int) -> bool:
    """It had read all of a closed log, and its streams had ended, before the store lost it. Whether it was
    told `204` too does not matter: an EventSource whose stream ended asks again, and after the loss it is
    answered 404 (the topic went with the data), but it had everything the log would ever hold."""
    log = epoch.logs.get(reader.topic)
    closes = [closed for _, closed in reader.connections if closed is not None]
    return (
        len(closes) == len(reader.connections)
        and log is not None
        and log.status != "open"
        and cursor == log.last_id
        and bool(closes)
        and max(closes) <= epoch.end
    )


def check_readers(history: History) -> Verdict:
    verdict = Verdict()
    epochs = _epochs(history)
    delivered: Counter[str] = Counter()
    missed = duplicated = reordered = 0
    resets: list[dict[str, Any]] = []
    worst: dict[str, dict[str, Any]] = {}
    for reader in history.readers:
        violations, fig = check_reader(reader, epochs)
        verdict.violations += violations
        delivered[reader.client] += fig.delivered
        missed += fig.missed
        duplicated += fig.duplicated
        reordered += fig.reordered
        resets += fig.resets
        best = worst.get(reader.client)
        if best is None or fig.worst_reconnect > best["seconds"]:
            worst[reader.client] = {"reader": reader.name, "seconds": round(fig.worst_reconnect, 3)}
    verdict.figures.update(
        readers=dict(Counter(r.client for r in history.readers)),
        delivered=dict(delivered),
        missed=missed,
        duplicated=duplicated,
        reordered=reordered,
        resets=resets,
        worst_reconnect=worst,
    )
    return verdict


# -- runs ----------------------------------------------------------------------------------------------------


def _last_log(epochs: tuple[Epoch, ...], topic: str) -> tuple[int, TopicLog] | None:
    for index in range(len(epochs) - 1, -1, -1):
        log = epochs[index].logs.get(topic)
        if log is not None:
            return index, log
    return None


def check_runs(history: History) -> Verdict:
    """Each run ends in exactly one terminal event that closes its topic; a retried start starts one run."""
    verdict = Verdict()
    epochs = _epochs(history)
    statuses: Counter[str] = Counter()
    for run in history.runs:
        if len(set(run.answered)) > 1:
            verdict.violations.append(
                Violation("run_twice", f"run key {run.key}", f"the start call was answered with runs {run.answered}")
            )
        if run.topic is None:
            statuses["never started"] += 1
            continue
        if run.status == "not found" and len(epochs) > 1 and run.start < epochs[-1].start:
            statuses["lost with the store's data"] += 1
            continue
        statuses[run.status or "unknown"] += 1
        _check_run(run, run.topic, epochs, verdict)
    verdict.figures["runs"] = dict(sorted(statuses.items()))
    return verdict


def _check_run(run: Run, topic: str, epochs: tuple[Epoch, ...], verdict: Verdict) -> None:
    found = _last_log(epochs, topic)
    if found is None:
        verdict.violations.append(Violation("run_not_terminal", topic, "the run has no log at the end"))
        return
    index, log = found
    terminal = [e for e in log.events if e.event in TERMINAL_EVENTS]
    last = log.events[-1] if log.events else None
    if last is None or last.event not in TERMINAL_EVENTS:
        what = f"{last.event} (id {last.id})" if last else "nothing"
        verdict.violations.append(
            Violation("run_not_terminal", topic, f"its log ({log.status}) ends with {what}, not done/error/cancelled")
        )
    elif len(terminal) > 1:
        ends = ", ".join(f"{e.event} at {e.id}" for e in terminal)
        verdict.violations.append(Violation("run_not_terminal", topic, f"its log ends more than once: {ends}"))
    elif TERMINAL_EVENTS[last.event] != log.status:
        verdict.violations.append(
            Violation("run_not_terminal", topic, f"its log ends with {last.event} but the topic is {log.status}")
        )
    if run.status not in TERMINAL_EVENTS.values():
        verdict.violations.append(Violation("run_not_terminal", topic, f"the run document says {run.status}"))
    whole = index == len(epochs) - 1 and epochs[index].start <= run.start and log.first_id == 1
    if run.status == "completed" and run.answer is not None and whole:
        text = "".join(_content(e) for e in log.events if e.event == "text_delta")
        if text != run.answer:
            verdict.violations.append(
                Violation(
                    "run_text",
                    topic,
                    f"its text_delta events make {len(text)} characters, its answer has {len(run.answer)}: "
                    f"they differ from character {_first_difference(text, run.answer)}",
                )
            )


def _content(event: LoggedEvent) -> str:
    try:
        value = json.loads(event.payload)
    except ValueError:
        return ""
    return str(value.get("content", "")) if isinstance(value, dict) else ""


def _first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


# -- answers, logs of the hubs, resources -------------------------------------------------------------------


def check_answers(history: History) -> Verdict:
    """No 5xx but 503, and a 503 only while the store is away or within `grace_503` s of its return,
    or while a hub shuts down (SIGTERM: it drains)."""
    verdict = Verdict()
    grace = history.limits.grace_503
    by_status: Counter[int] = Counter()
    expected = draining = 0
    shutdowns = [f for f in history.faults if f.kind in ("hub_term", "both_hubs_down")]
    worst_late = 0.0
    for a in history.answers:
        by_status[a.status] += 1
        if a.status != 503:
            verdict.violations.append(
                Violation(
                    "server_error", f"{a.method} {a.path}", f"{a.client} was answered {a.status} at {a.start:.1f}s"
                )
            )
            continue
        if any(a.start <= o.end + grace and a.end >= o.start for o in history.outages):
            expected += 1
            continue
        if any(a.start <= f.end and a.end >= f.start for f in shutdowns):
            draining += 1
            continue
        before = [o for o in history.outages if o.end <= a.start]
        if before:
            last = max(before, key=lambda o: o.end)
            late = a.start - last.end
            worst_late = max(worst_late, late)
            why = f"{late:.1f}s after the store answered again (the {last.cause} ended at {last.end:.1f}s)"
        else:
            why = "with the store up all along"
        verdict.violations.append(
            Violation("late_503", f"{a.method} {a.path}", f"{a.client} asked at {a.start:.1f}s and got a 503 {why}")
        )
    verdict.figures.update(
        answers_5xx=dict(sorted(by_status.items())),
        expected_503=expected,
        draining_503=draining,
        late_503=by_status[503] - expected - draining,
        worst_late_503=round(worst_late, 3),
    )
    return verdict


def check_incidents(history: History) -> Verdict:
    """No ERROR in a hub's log, but for what the store's absence causes (a run that could not write) meanwhile.

    An unhandled exception (a 500) is never expected.
    """
    verdict = Verdict()
    grace = history.limits.grace_503
    expected = 0
    for incident in history.incidents:
        unhandled = "unhandled error" in incident.line or "Exception in ASGI application" in incident.line
        t = incident.t
        if not unhandled and t is not None and any(o.start - 0.5 <= t <= o.end + grace for o in history.outages):
            expected += 1
            continue
        detail = incident.line + (f" -> {incident.exception}" if incident.exception else "")
        verdict.violations.append(Violation("hub_error", incident.process, detail))
    verdict.figures.update(hub_errors=len(history.incidents), hub_errors_expected=expected)
    return verdict


def check_resources(history: History) -> Verdict:
    """Bounded growth: once every client has gone, a hub holds about what it held before the run."""
    verdict = Verdict()
    limits = history.limits
    table: dict[str, dict[str, Any]] = {}
    processes = sorted({s.process for s in history.samples})
    for process in processes:
        mine = [s for s in history.samples if s.process == process]
        baseline = next((s for s in mine if s.phase == "baseline"), None)
        final = next((s for s in reversed(mine) if s.phase == "final"), None)
        table[process] = {
            "incarnations": len({s.incarnation for s in mine}),
            "rss_mb": [_mb(baseline), _mb(final)],
            "peak_rss_mb": round(max(s.rss_kb for s in mine) / 1024, 1),
            "fds": [baseline.fds if baseline else None, final.fds if final else None],
            "peak_fds": max(s.fds for s in mine),
            "store_sockets": [baseline.store_sockets if baseline else None, final.store_sockets if final else None],
        }
        if baseline is None or final is None:
            continue
        # Connections to the store are a pool, bounded by how much was asked of it at once; the rest must go back.
        before, after = baseline.fds - baseline.store_sockets, final.fds - final.store_sockets
        if after > before + limits.fd_slack:
            verdict.violations.append(
                Violation(
                    "fd_leak",
                    process,
                    f"{after} file descriptors after the run, {before} before (at most {limits.fd_slack} more), "
                    f"besides {final.store_sockets} connections to the store",
                )
            )
        if final.client_sockets:
            verdict.violations.append(
                Violation(
                    "fd_leak", process, f"{final.client_sockets} client connections still open after every client left"
                )
            )
        allowed = baseline.rss_kb * limits.rss_ratio + limits.rss_slack_kb
        if final.rss_kb > allowed:
            verdict.violations.append(
                Violation(
                    "memory_growth",
                    process,
                    f"RSS {final.rss_kb / 1024:.1f} MB after the run, {baseline.rss_kb / 1024:.1f} MB before "
                    f"(allowed {allowed / 1024:.1f} MB)",
                )
            )
    verdict.figures["processes"] = table
    return verdict


def _mb(sample: Any) -> float | None:
    return None if sample is None else round(sample.rss_kb / 1024, 1)
