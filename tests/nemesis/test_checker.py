"""The checker, fed hand-made histories: each kind of violation is reported, precisely, and nothing else."""

from __future__ import annotations

import math

import pytest

from .checker import Violation, check, check_reader
from .history import (
    Answer,
    Delivery,
    Epoch,
    Fault,
    History,
    Incident,
    LoggedEvent,
    Outage,
    Publish,
    Reader,
    Run,
    Sample,
    TopicLog,
)


def log(
    topic: str, payloads: list[str], *, first: int = 1, status: str = "completed", event: str = "message"
) -> TopicLog:
    events = tuple(LoggedEvent(first + i, event, p) for i, p in enumerate(payloads))
    return TopicLog(topic, first, first + len(payloads) - 1, status, events)


def pub(payload: str, event_id: int | None, *, topic: str = "t", t: float = 1.0, attempts: int = 1) -> Publish:
    ids = None if event_id is None else (event_id,)
    return Publish("pub0", topic, f"key-{payload}", (payload,), t, t + 0.1, ids, attempts)


def reader(
    ids: list[int | tuple[int, str]],
    payloads: dict[int, str] | None = None,
    *,
    topic: str = "t",
    finished: bool = True,
    after: int | None = 0,
    start: float = 0.5,
    name: str = "py0",
) -> Reader:
    """A reader given `ids` in order; an item (id, "reset") is a reset frame; payload of id n is `a{n}` by default."""
    deliveries = []
    for i, item in enumerate(ids):
        t = start + 0.1 * (i + 1)
        if isinstance(item, tuple):
            deliveries.append(Delivery(item[0], item[1], "{}", t))
        else:
            deliveries.append(Delivery(item, "message", (payloads or {}).get(item, f"a{item}"), t))
    return Reader(name, "python", topic, after, start, tuple(deliveries), finished)


def history(**parts: object) -> History:
    defaults: dict[str, object] = {"store": "sqlite", "seed": 1, "duration": 10.0}
    return History(**{**defaults, **parts})  # type: ignore[arg-type]


def one_epoch(*logs: TopicLog) -> tuple[Epoch, ...]:
    return (Epoch(0.0, math.inf, {entry.topic: entry for entry in logs}),)


A5 = [f"a{i}" for i in range(1, 6)]
CLEAN = history(
    publishes=tuple(pub(p, i) for i, p in enumerate(A5, 1)),
    readers=(reader([1, 2, 3, 4, 5]), reader([3, 4, 5], after=2, name="py1")),
    epochs=one_epoch(log("t", A5)),
)


def kinds(h: History) -> list[str]:
    return [v.kind for v in check(h).violations]


def only(h: History, kind: str) -> Violation:
    violations = check(h).violations
    assert [v.kind for v in violations] == [kind], violations
    return violations[0]


def test_a_clean_history_passes_and_counts() -> None:
    verdict = check(CLEAN)
    assert verdict.ok, verdict.violations
    figures = verdict.figures
    assert (figures["published"], figures["acknowledged"], figures["lost"]) == (5, 5, 0)
    assert figures["delivered"] == {"python": 8}
    assert (figures["missed"], figures["duplicated"], figures["reordered"], figures["resets"]) == (0, 0, 0, [])


def test_an_acknowledged_event_missing_from_the_log_is_lost() -> None:
    h = history(publishes=(pub("a1", 1), pub("a2", 2)), epochs=one_epoch(log("t", ["a1"])))
    v = only(h, "lost")
    assert v.subject == "t id 2"
    assert v.detail == "pub0 was acknowledged id 2 for a2 at 1.1s (after 1 attempt); the log holds nothing at 2"


def test_an_acknowledged_id_holding_another_payload_is_lost_and_says_where_it_went() -> None:
    h = history(
        publishes=(pub("a1", 1), pub("a2", 2), pub("a3", 3, attempts=2)),
        epochs=one_epoch(log("t", ["a1", "a3", "a2"])),
    )
    violations = check(h).violations
    assert [(v.kind, v.subject) for v in violations] == [("lost", "t id 2"), ("lost", "t id 3")]
    assert violations[0].detail.endswith("the log holds a3 at 2 and has a2 at [3]")
    assert "(after 2 attempts)" in violations[1].detail


def test_retried_publishes_stored_twice_are_reported_acknowledged_or_not() -> None:
    h = history(
        publishes=(pub("a1", 1, attempts=3), pub("a2", None)),
        epochs=one_epoch(log("t", ["a1", "a1", "a2", "a2"])),
    )
    violations = check(h).violations
    assert [(v.kind, v.subject) for v in violations] == [
        ("stored_twice", "t ids [1, 2]"),
        ("stored_twice", "t ids [3, 4]"),
    ]
    assert violations[0].detail == (
        "a1 is stored 2 times in the log: one call by pub0 with key key-a1, 3 attempts in all, acknowledged as [1]"
    )
    assert violations[1].detail.endswith("1 attempt in all, never acknowledged")
    repeated = history(
        publishes=(pub("a1", 1), pub("a1", 2, attempts=2)),  # the same call again, answered with other ids
        epochs=one_epoch(log("t", ["a1", "a1"])),
    )
    assert only(repeated, "stored_twice").detail == (
        "a1 is stored 2 times in the log: the same call made 2 times by pub0 with key key-a1, 2 attempts in all, "
        "acknowledged as [1] and [2]"
    )
    assert check(h).figures["stored_twice"] == 2


def test_unacknowledged_publishes_may_be_absent_or_present_once() -> None:
    h = history(publishes=(pub("a1", 1), pub("a2", None), pub("a3", None)), epochs=one_epoch(log("t", ["a1", "a2"])))
    verdict = check(h)
    assert verdict.ok, verdict.violations
    assert (verdict.figures["unacknowledged_present"], verdict.figures["unacknowledged_absent"]) == (1, 1)


def test_an_event_no_publisher_sent() -> None:
    v = only(history(publishes=(pub("a1", 1),), epochs=one_epoch(log("t", ["a1", "zz"]))), "unknown_event")
    assert (v.subject, v.detail) == ("t id 2", "no publisher sent 'zz'")


def test_a_log_with_a_hole() -> None:
    broken = TopicLog("t", 1, 3, "completed", (LoggedEvent(1, "message", "a1"), LoggedEvent(3, "message", "a3")))
    h = history(publishes=(pub("a1", 1), pub("a3", 3)), epochs=one_epoch(broken))
    v = only(h, "log_hole")
    assert v.detail == "the log runs 1..3 but misses 2, has extra nothing"


def test_retention_trimmed_events_are_not_lost() -> None:
    h = history(publishes=tuple(pub(p, i) for i, p in enumerate(A5, 1)), epochs=one_epoch(log("t", A5[3:], first=4)))
    verdict = check(h)
    assert verdict.ok, verdict.violations
    assert verdict.figures["trimmed"] == 3


@pytest.mark.parametrize(
    ("ids", "kind", "detail"),
    [
        ([1, 2, 4, 5], "gap", "was given id 4 right after id 2 at 0.8s: ids 3 skipped silently"),
        ([1, 2, 2, 3, 4, 5], "duplicate", "was given id 2 a second time at 0.8s"),
        ([1, 3, 2, 4, 5], "gap", "was given id 3 right after id 1 at 0.7s: ids 2 skipped silently"),
    ],
)
def test_a_reader_that_skips_repeats_or_reorders(ids: list[int | tuple[int, str]], kind: str, detail: str) -> None:
    h = history(publishes=CLEAN.publishes, readers=(reader(ids),), epochs=CLEAN.epochs)
    violations = check(h).violations
    assert violations[0] == Violation(kind, "py0 (python) on t", detail)


def test_a_reordered_delivery_is_told_apart_from_a_repeat() -> None:
    violations, fig = check_reader(reader([1, 3, 2, 4, 5]), CLEAN.epochs)
    assert [v.kind for v in violations] == ["gap", "reorder"]
    assert violations[1].detail == "was given id 2 after id 3 at 0.8s"
    assert (fig.missed, fig.reordered, fig.duplicated) == (1, 1, 0)


def test_a_delivery_that_the_log_does_not_hold() -> None:
    h = history(publishes=CLEAN.publishes, readers=(reader([1, 2, 3], {2: "a9"}, finished=False),), epochs=CLEAN.epochs)
    assert kinds(h) == ["wrong_payload", "incomplete"]
    v = check(h).violations[0]
    assert v.detail == "was given message 'a9' as id 2 at 0.7s; the log holds message 'a2' there"


def test_readers_that_do_not_read_to_the_end() -> None:
    h = history(
        publishes=CLEAN.publishes,
        readers=(reader([1, 2], finished=False), reader([1, 2, 3], name="py1")),
        epochs=CLEAN.epochs,
    )
    assert [v.detail for v in check(h).violations] == [
        "never finished: it read to id 2 of 5",
        "finished at id 3, but the log ends at 5",
    ]


def test_a_reset_for_retention_is_fine_one_that_skips_stored_events_is_not() -> None:
    trimmed = one_epoch(log("t", A5[2:], first=3))
    ok = reader([(2, "reset"), 3, 4, 5])
    assert check_reader(ok, trimmed)[0] == []
    assert check_reader(ok, trimmed)[1].resets == [{"reader": "py0", "t": 0.6, "from": 0, "to": 2}]
    skipping = reader([1, (3, "reset"), 4, 5])
    violations, _ = check_reader(skipping, CLEAN.epochs)
    assert violations == [
        Violation(
            "bad_reset",
            "py0 (python) on t",
            "a reset at 0.7s moved the cursor from 1 to 3, skipping ids 2..3 that the log holds",
        )
    ]
    rewinding = reader([1, 2, 3, (0, "reset"), 1, 2, 3, 4, 5])
    violations, _ = check_reader(rewinding, CLEAN.epochs)
    assert [v.kind for v in violations] == ["bad_reset", "duplicate", "duplicate", "duplicate"]
    assert violations[0].detail == "a reset at 0.9s rewound the cursor from 3 to 0"


# The store lost its data at 5.0 s: the first log held a1..a3, the new one b1, b2.
LOST = (
    Epoch(0.0, 5.0, {"t": log("t", ["a1", "a2", "a3"], status="open")}),
    Epoch(5.0, math.inf, {"t": log("t", ["b1", "b2"])}),
)
LOST_PUBLISHES = (pub("a1", 1), pub("a2", 2), pub("a3", 3), pub("b1", 1, t=6.0), pub("b2", 2, t=6.5))


def test_an_announced_reset_where_the_log_was_lost_is_fine() -> None:
    r = reader([1, 2, 3, (0, "reset"), 1, 2], {1: "a1", 2: "a2", 3: "a3"})
    r = Reader(
        r.name,
        r.client,
        r.topic,
        0,
        0.5,
        r.deliveries[:4] + tuple(Delivery(d.id, d.event, f"b{d.id}", d.t) for d in r.deliveries[4:]),
        True,
    )
    verdict = check(history(publishes=LOST_PUBLISHES, readers=(r,), epochs=LOST))
    assert verdict.ok, verdict.violations
    assert verdict.figures["resets"] == [{"reader": "py0", "t": 0.9, "from": 3, "to": 0, "new_log": True}]
    assert verdict.figures["acknowledged"] == 5  # each in the log of its time


def test_going_on_in_a_new_log_without_a_reset_is_a_silent_reset() -> None:
    # What a client that drops ids it has seen does when the server splices the new log onto the old one.
    deliveries = (*(Delivery(i, "message", f"a{i}", 0.5 + i) for i in (1, 2)), Delivery(3, "message", "b3", 7.0))
    epochs = (LOST[0], Epoch(5.0, math.inf, {"t": log("t", ["b1", "b2", "b3"])}))
    r = Reader("node0", "node", "t", 0, 0.5, deliveries, True)
    violations, fig = check_reader(r, epochs)
    assert violations == [
        Violation(
            "silent_reset",
            "node0 (node) on t",
            "had read to id 2 of the log lost at 5.0s, then was given id 3 of the log begun at 5.0s with no "
            "event: reset before it (ids 1..2 of the new log never shown)",
        )
    ]
    assert fig.missed == 2


def test_a_reader_left_on_the_lost_log_never_finishes() -> None:
    r = reader([1, 2, 3], {1: "a1", 2: "a2", 3: "a3"}, finished=False)
    violations, _ = check_reader(r, LOST)
    assert [(v.kind, v.detail) for v in violations] == [
        (
            "silent_reset",
            "read to id 3 of the log lost at 5.0s and was never told it was lost (no event: reset); "
            "it never saw the 2 events of the new log",
        )
    ]
    answered = Reader(r.name, r.client, r.topic, 0, 0.5, r.deliveries, True)
    assert "then was answered as if it had read everything" in check_reader(answered, LOST)[0][0].detail
    told = Reader(r.name, r.client, r.topic, 0, 0.5, (*r.deliveries, Delivery(0, "reset", "{}", 5.5)), False)
    assert [v.detail for v in check_reader(told, LOST)[0]] == ["never read the new log, which ends at id 2"]
    gone = (LOST[0], Epoch(5.0, math.inf, {}))
    assert check_reader(told, gone)[0] == []  # its topic went with the data, and it was told


def test_a_reader_given_the_lost_log_after_the_loss() -> None:
    late = Reader("py9", "python", "t", 0, 6.0, (Delivery(1, "message", "a1", 6.1),), False)
    violations, _ = check_reader(late, LOST)
    assert violations[0].kind == "wrong_payload"
    assert violations[0].detail.endswith("holds message 'b1' there (it is id 1 of the log lost at 5.0s)")


def test_runs() -> None:
    chat = TopicLog(
        "runs/r1",
        1,
        4,
        "completed",
        (
            LoggedEvent(1, "progress", '{"percent":5}'),
            LoggedEvent(2, "text_delta", '{"content":"Hello"}'),
            LoggedEvent(3, "text_delta", '{"content":" you"}'),
            LoggedEvent(4, "done", '{"result":{}}'),
        ),
    )
    good = Run("k1", ("r1", "r1"), 1.0, "completed", "Hello you")
    assert check(history(runs=(good,), epochs=one_epoch(chat))).ok
    twice = Run("k1", ("r1", "r2"), 1.0, "completed", "Hello you")
    assert kinds(history(runs=(twice,), epochs=one_epoch(chat))) == ["run_twice"]
    wrong = Run("k1", ("r1",), 1.0, "completed", "Hello yo")
    v = only(history(runs=(wrong,), epochs=one_epoch(chat)), "run_text")
    assert v.detail == "its text_delta events make 9 characters, its answer has 8: they differ from character 8"
    running = TopicLog("runs/r1", 1, 2, "open", chat.events[:2])
    stuck = Run("k1", ("r1",), 1.0, "running")
    details = [v.detail for v in check(history(runs=(stuck,), epochs=one_epoch(running))).violations]
    assert details == [
        "its log (open) ends with text_delta (id 2), not done/error/cancelled",
        "the run document says running",
    ]
    ended_twice = TopicLog(
        "runs/r1", 1, 2, "failed", (LoggedEvent(1, "cancelled", "{}"), LoggedEvent(2, "error", "{}"))
    )
    v = only(history(runs=(Run("k1", ("r1",), 1.0, "failed"),), epochs=one_epoch(ended_twice)), "run_not_terminal")
    assert v.detail == "its log ends more than once: cancelled at 1, error at 2"


def test_5xx_answers() -> None:
    outage = Outage("redis restart", 10.0, 12.0)
    answers = (
        Answer("pub0", "POST", "/topics/t/events", 503, 11.0, 11.1),  # during the outage
        Answer("pub0", "POST", "/topics/t/events", 503, 12.8, 12.9),  # within the grace
        Answer("pub1", "POST", "/topics/t/events", 503, 15.5, 15.6),  # late
        Answer("pub1", "POST", "/topics/t/events", 500, 3.0, 3.1),
    )
    verdict = check(history(answers=answers, outages=(outage,)))
    assert [(v.kind, v.detail) for v in verdict.violations] == [
        (
            "late_503",
            "pub1 asked at 15.5s and got a 503 3.5s after the store answered again (the redis restart ended at 12.0s)",
        ),
        ("server_error", "pub1 was answered 500 at 3.0s"),
    ]
    assert (verdict.figures["expected_503"], verdict.figures["late_503"]) == (2, 1)
    assert only(history(answers=answers[:1]), "late_503").detail.endswith("with the store up all along")
    # A hub that shuts down (SIGTERM) answers what is still open 503, with Retry-After: expected then.
    term = Fault("hub_term", "hub0", 15.0, 17.0, "exit code -15")
    verdict = check(history(answers=answers[2:3], faults=(term,)))
    assert not verdict.violations
    assert (verdict.figures["draining_503"], verdict.figures["late_503"]) == (1, 0)


def test_errors_in_a_hub_log() -> None:
    unhandled = Incident(
        "hub0", "ERROR ssehub: unhandled error on POST /topics/t/events", "starlette.requests.ClientDisconnect", 11.0
    )
    failed_run = Incident("hub0", "ERROR ssehub.runs: run x of agent 'chat' failed", "StoreUnavailable", 11.0)
    outage = (Outage("redis restart", 10.0, 12.0),)
    v = only(history(incidents=(unhandled, failed_run), outages=outage), "hub_error")
    assert v.detail.endswith("-> starlette.requests.ClientDisconnect")  # a 500 is never expected
    later = Incident("hub0", failed_run.line, failed_run.exception, 14.0)
    assert only(history(incidents=(failed_run, later), outages=outage), "hub_error").detail.startswith(
        "ERROR ssehub.runs"
    )
    assert check(history(incidents=(failed_run,), outages=outage)).figures["hub_errors_expected"] == 1


def test_bounded_growth_of_file_descriptors_and_memory() -> None:
    def samples(fds: int, rss_kb: int, store: int = 0, clients: int = 0) -> tuple[Sample, ...]:
        return (
            Sample("hub0", 0, 10, 0.0, 50_000, 20, "baseline", 1),
            Sample("hub0", 0, 10, 5.0, 90_000, 80, "run", 10, 40),
            Sample("hub0", 1, 11, 9.0, rss_kb, fds, "final", store, clients),
        )

    assert check(history(samples=samples(30, 100_000))).ok
    assert check(history(samples=samples(60, 100_000, store=30))).ok  # the store's pool is not a leak
    assert only(history(samples=samples(38, 100_000, store=1)), "fd_leak").detail == (
        "37 file descriptors after the run, 19 before (at most 16 more), besides 1 connections to the store"
    )
    assert only(history(samples=samples(30, 100_000, clients=2)), "fd_leak").detail == (
        "2 client connections still open after every client left"
    )
    assert only(history(samples=samples(30, 150_000)), "memory_growth").detail == (
        "RSS 146.5 MB after the run, 48.8 MB before (allowed 137.2 MB)"
    )
    table = check(history(samples=samples(30, 100_000))).figures["processes"]
    assert table["hub0"] == {
        "incarnations": 2,
        "rss_mb": [48.8, 97.7],
        "peak_rss_mb": 97.7,
        "fds": [20, 30],
        "peak_fds": 80,
        "store_sockets": [1, 0],
    }


def test_runs_lost_with_the_store_data_are_counted_not_blamed() -> None:
    lost = Run("k1", ("r1",), 1.0, "not found")
    verdict = check(history(runs=(lost,), epochs=LOST))
    assert verdict.ok and verdict.figures["runs"] == {"lost with the store's data": 1}
    after = Run("k2", ("r2",), 6.0, "not found")
    assert only(history(runs=(after,), epochs=LOST), "run_not_terminal").detail == "the run has no log at the end"


def test_faults_are_counted_by_kind() -> None:
    faults = (Fault("hub_kill", "hub0", 1, 2), Fault("cut", "proxy", 3, 3.5), Fault("hub_kill", "hub1", 4, 5))
    assert check(history(faults=faults)).figures["faults"] == {"cut": 1, "hub_kill": 2}


def test_a_reader_that_finished_before_the_loss_was_not_harmed_by_it() -> None:
    # A run read to its end (the log closed at id 3) before the store lost its data at 5.0 s.
    ended = (Epoch(0.0, 5.0, {"t": log("t", ["a1", "a2", "a3"], status="completed")}), LOST[1])
    deliveries = tuple(Delivery(i, "message", f"a{i}", 0.5 + i) for i in (1, 2, 3))
    done = Reader("py0", "python", "t", 0, 0.5, deliveries, True, ((0.6, 3.6),))
    assert check_reader(done, ended)[0] == []
    # Its stream ended at the close, and its reconnect came after the loss (answered 404, not 204): not harmed.
    unanswered = Reader("node0", "node", "t", 0, 0.5, deliveries, False, ((0.6, 3.6),))
    assert check_reader(unanswered, ended)[0] == []
    # But one whose stream was still open when the log was lost was never told that it was.
    still_open = Reader("node0", "node", "t", 0, 0.5, deliveries, False, ((0.6, None),))
    assert [v.kind for v in check_reader(still_open, ended)[0]] == ["silent_reset"]
    # The same reader still reading when the log was lost, and then answered "finished", was harmed.
    late = Reader("py0", "python", "t", 0, 0.5, deliveries, True, ((0.6, 3.6), (5.5, 5.6)))
    assert [v.kind for v in check_reader(late, ended)[0]] == ["silent_reset"]
