"""The store side of Durable Streams, one contract over memory://, SQLite and Redis: creating with a
configuration, appends under conditions (Stream-Seq, idempotent producers, close), expiry, soft deletes
and the pins forks hold on their sources -- each one atomic step, so a retry anywhere is exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from ssehub import NewEvent, Store, open_store
from ssehub.stores import Change, Producer

META = {"durable": {"content_type": "text/plain"}}


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url, max_events=100, ttl=3600)
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


def ev(data: str) -> NewEvent:
    return NewEvent("message", data)


async def test_create_once_then_exists(store: Store) -> None:
    created = await store.create_stream("s", META, [ev("a"), ev("b")], closed=False, deadline=None)
    assert (created.outcome, created.ids, created.state.info.last_id) == ("created", (1, 2), 2)
    assert created.state.info.meta == META
    again = await store.create_stream("s", {"durable": {"content_type": "x/y"}}, [ev("c")], closed=True, deadline=None)
    assert again.outcome == "exists" and again.state.info.meta == META and not again.state.info.closed
    page = await store.read("s", 0, 10)
    assert page is not None and [e.data for e in page.events] == ["a", "b"]


async def test_create_closed_and_after_a_base(store: Store) -> None:
    created = await store.create_stream("f", META, [ev("own")], closed=True, deadline=None, base=5, forked_from="src")
    info = created.state.info
    assert (created.ids, info.first_id, info.last_id, info.closed) == ((6,), 6, 6, True)
    page = await store.read("f", 5, 10)
    assert page is not None and [(e.id, e.data) for e in page.events] == [(6, "own")]
    assert (await store.append_stream("f", [ev("x")])).outcome == "closed"


@pytest.mark.parametrize(
    ("claims", "outcomes"),
    [
        # (epoch, seq) per append, and what each gets: (outcome, epoch, seq answered)
        ([(0, 0), (0, 1), (0, 2)], [("ok", 0, 0), ("ok", 0, 1), ("ok", 0, 2)]),
        ([(0, 0), (0, 0)], [("ok", 0, 0), ("duplicate", 0, 0)]),
        ([(0, 0), (0, 1), (0, 2), (0, 1)], [("ok", 0, 0), ("ok", 0, 1), ("ok", 0, 2), ("duplicate", 0, 2)]),
        ([(0, 0), (0, 2)], [("ok", 0, 0), ("seq_gap", 0, 1)]),
        ([(0, 3)], [("seq_gap", 0, 0)]),
        ([(1, 0), (0, 0)], [("ok", 1, 0), ("stale_epoch", 1, 0)]),
        ([(0, 0), (0, 1), (1, 0), (1, 1)], [("ok", 0, 0), ("ok", 0, 1), ("ok", 1, 0), ("ok", 1, 1)]),
        ([(0, 0), (1, 1)], [("ok", 0, 0), ("bad_epoch_seq", 0, 0)]),
    ],
)
async def test_idempotent_producers(store: Store, claims: list[tuple[int, int]], outcomes: list[object]) -> None:
    await store.create_stream("s", META, [], closed=False, deadline=None)
    got = []
    for n, (epoch, seq) in enumerate(claims):
        done = await store.append_stream("s", [ev(f"m{n}")], producer=Producer("p", epoch, seq))
        got.append((done.outcome, done.epoch, done.seq))
    assert got == outcomes
    page = await store.read("s", 0, 10)
    assert page is not None
    assert len(page.events) == sum(1 for o in outcomes if o[0] == "ok")  # type: ignore[index]


async def test_producers_are_independent(store: Store) -> None:
    await store.create_stream("s", META, [], closed=False, deadline=None)
    assert (await store.append_stream("s", [ev("A0")], producer=Producer("a", 0, 0))).outcome == "ok"
    assert (await store.append_stream("s", [ev("B0")], producer=Producer("b", 0, 0))).outcome == "ok"
    assert (await store.append_stream("s", [ev("A1")], producer=Producer("a", 0, 1))).outcome == "ok"
    page = await store.read("s", 0, 10)
    assert page is not None and [e.data for e in page.events] == ["A0", "B0", "A1"]


@pytest.mark.parametrize(
    ("seqs", "outcomes"),
    [
        (["001", "002", "001"], ["ok", "ok", "seq_conflict"]),
        (["2", "10"], ["ok", "seq_conflict"]),
        (["09", "10"], ["ok", "ok"]),
        (["a", "B"], ["ok", "seq_conflict"]),
        (["a", "a"], ["ok", "seq_conflict"]),
        (["a", "ab", "b"], ["ok", "ok", "ok"]),
    ],
)
async def test_stream_seq_is_byte_wise(store: Store, seqs: list[str], outcomes: list[str]) -> None:
    await store.create_stream("s", META, [], closed=False, deadline=None)
    assert [(await store.append_stream("s", [ev(q)], seq=q)).outcome for q in seqs] == outcomes


async def test_close_is_atomic_with_the_last_append_and_a_retry_is_a_duplicate(store: Store) -> None:
    await store.create_stream("s", META, [ev("a")], closed=False, deadline=None)
    done = await store.append_stream("s", [ev("last")], producer=Producer("p", 0, 0), close=True)
    assert (done.outcome, done.closed, done.last_id) == ("ok", True, 2)
    retry = await store.append_stream("s", [ev("other body")], producer=Producer("p", 0, 0), close=True)
    assert (retry.outcome, retry.closed, retry.seq) == ("duplicate", True, 0)
    assert (await store.append_stream("s", [ev("x")], producer=Producer("p", 0, 1))).outcome == "closed"
    assert (await store.append_stream("s", [ev("x")])).outcome == "closed"
    assert (await store.append_stream("s", [], close=True)).outcome == "closed"
    page = await store.read("s", 0, 10)
    assert page is not None and [e.data for e in page.events] == ["a", "last"] and page.status == "completed"


async def test_close_only_with_a_producer_records_its_claim(store: Store) -> None:
    await store.create_stream("s", META, [], closed=False, deadline=None)
    done = await store.append_stream("s", [], producer=Producer("p", 0, 0), close=True)
    assert (done.outcome, done.closed, done.ids) == ("ok", True, ())
    assert (await store.append_stream("s", [], producer=Producer("p", 0, 0), close=True)).outcome == "duplicate"


async def test_concurrent_retries_of_one_claim_append_once(store_url: str, store: Store) -> None:
    # Two stores on one URL are two nodes for Redis; for the others, two calls racing on one.
    other = open_store(store_url) if store.shared else store
    if other is not store:
        await other.start()
    try:
        await store.create_stream("s", META, [], closed=False, deadline=None)
        results = await asyncio.gather(
            *(s.append_stream("s", [ev("once")], producer=Producer("p", 0, 0)) for s in [store, other] * 5)
        )
        assert sorted(r.outcome for r in results) == ["duplicate"] * 9 + ["ok"]
        page = await store.read("s", 0, 10)
        assert page is not None and [e.data for e in page.events] == ["once"]
    finally:
        if other is not store:
            await other.aclose()


async def test_appends_are_reported_in_order(store: Store) -> None:
    changes: list[Change] = []
    store.add_listener(changes.append)
    await store.follow("s", 0)
    await store.create_stream("s", META, [ev("a")], closed=False, deadline=None)
    await store.append_stream("s", [ev("b")])
    await store.append_stream("s", [], close=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(c.status for c in changes):
        await asyncio.sleep(0.01)
    await store.unfollow("s")
    assert [e.data for c in changes for e in c.events] == ["a", "b"]
    assert [c.status for c in changes if c.status] == ["completed"]


async def test_missing_streams(store: Store) -> None:
    assert await store.stream_state("none") is None
    assert (await store.append_stream("none", [ev("x")])).outcome == "not_found"
    assert await store.delete_stream("none") == "not_found"
    assert await store.pin_source("none", "f") is None


async def test_expiry_and_sliding_renewal(store: Store) -> None:
    now = time.time()
    await store.create_stream("s", META, [ev("a")], closed=False, deadline=now + 0.5)
    assert (await store.append_stream("s", [ev("b")], renew=now + 0.8)).outcome == "ok"
    await store.touch_stream("s", time.time() + 0.8)
    state = await store.stream_state("s")
    assert state is not None and not state.dead(time.time())
    await asyncio.sleep(1.0)
    state = await store.stream_state("s")
    assert state is None or state.dead(time.time())
    assert (await store.append_stream("s", [ev("late")])).outcome == "not_found"
    recreated = await store.create_stream("s", META, [ev("new")], closed=False, deadline=None)
    assert recreated.outcome == "created" and recreated.ids == (1,)
    page = await store.read("s", 0, 10)
    assert page is not None and [e.data for e in page.events] == ["new"]


async def test_soft_delete_while_pinned_then_collected_with_the_last_fork(store: Store) -> None:
    await store.create_stream("src", META, [ev("shared")], closed=False, deadline=None)
    pinned = await store.pin_source("src", "fork")
    assert pinned is not None and pinned.forks == 1
    assert (await store.pin_source("src", "fork")).forks == 1  # type: ignore[union-attr]
    await store.create_stream("fork", META, [], closed=False, deadline=None, base=1, forked_from="src")
    assert await store.delete_stream("src") == "soft"
    state = await store.stream_state("src")
    assert state is not None and state.deleted
    page = await store.read("src", 0, 10)  # kept for the fork
    assert page is not None and [e.data for e in page.events] == ["shared"]
    assert await store.delete_stream("src") == "gone"
    assert (await store.append_stream("src", [ev("x")])).outcome == "gone"
    assert (await store.create_stream("src", META, [], closed=False, deadline=None)).outcome == "gone"
    again = await store.pin_source("src", "fork2")
    assert again is not None and again.deleted and again.forks == 1
    assert await store.delete_stream("fork") == "deleted"
    assert await store.stream_state("src") is None  # the cascade collected it


async def test_cascade_through_a_chain(store: Store) -> None:
    await store.create_stream("l0", META, [ev("root")], closed=False, deadline=None)
    await store.pin_source("l0", "l1")
    await store.create_stream("l1", META, [], closed=False, deadline=None, base=1, forked_from="l0")
    await store.pin_source("l1", "l2")
    await store.create_stream("l2", META, [], closed=False, deadline=None, base=1, forked_from="l1")
    assert [await store.delete_stream(t) for t in ("l0", "l1")] == ["soft", "soft"]
    assert await store.delete_stream("l2") == "deleted"
    assert [await store.stream_state(t) for t in ("l0", "l1", "l2")] == [None, None, None]


async def test_unpinning_a_live_source_keeps_it(store: Store) -> None:
    await store.create_stream("src", META, [ev("a")], closed=False, deadline=None)
    await store.pin_source("src", "f")
    await store.unpin_source("src", "f")
    state = await store.stream_state("src")
    assert state is not None and state.forks == 0 and not state.deleted
    assert await store.delete_stream("src") == "deleted"


async def test_an_expired_source_that_is_pinned_is_kept_for_its_forks(store: Store) -> None:
    await store.create_stream("src", META, [ev("a")], closed=False, deadline=time.time() + 0.3)
    await store.pin_source("src", "f")
    await asyncio.sleep(0.5)
    assert (await store.append_stream("src", [ev("x")])).outcome == "gone"
    assert (await store.create_stream("src", META, [], closed=False, deadline=None)).outcome == "gone"
    page = await store.read("src", 0, 10)
    assert page is not None and [e.data for e in page.events] == ["a"]
    await store.unpin_source("src", "f")
    assert await store.stream_state("src") is None
