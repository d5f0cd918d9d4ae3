"""One contract, every store: the same tests run over memory://, SQLite and (when configured) Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ssehub import IdempotencyConflict, NewEvent, Store, TopicClosed, TopicNotFound, open_store
from ssehub.stores import Change, payload_fingerprint


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url, max_events=5, ttl=0.2, key_ttl=0.2)
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


def ev(data: str, name: str = "message") -> NewEvent:
    return NewEvent(name, data)


async def test_ids_start_at_one_and_increase(store: Store) -> None:
    assert await store.append("t", [ev("a")]) == [1]
    assert await store.append("t", [ev("b"), ev("c")]) == [2, 3]
    assert await store.append("other", [ev("x")]) == [1]
    page = await store.read("t", 0, 10)
    assert page is not None
    assert [(e.id, e.data) for e in page.events] == [(1, "a"), (2, "b"), (3, "c")]
    assert (page.first_id, page.last_id, page.status) == (1, 3, "open")


async def test_read_after_and_limit(store: Store) -> None:
    await store.append("t", [ev(str(i)) for i in range(5)])
    page = await store.read("t", 2, 2)
    assert page is not None
    assert [e.id for e in page.events] == [3, 4]
    page = await store.read("t", 5, 10)
    assert page is not None and page.events == []
    assert await store.read("missing", 0, 10) is None


async def test_event_names_and_data_round_trip(store: Store) -> None:
    await store.append("t", [ev('{"a": "é\\n"}', "tool_start"), ev("line1\nline2")])
    page = await store.read("t", 0, 10)
    assert page is not None
    assert [(e.event, e.data) for e in page.events] == [("tool_start", '{"a": "é\\n"}'), ("message", "line1\nline2")]


async def test_idempotency_key_returns_original_ids_and_appends_nothing(store: Store) -> None:
    assert await store.append("t", [ev("a"), ev("b")], idempotency_key="k1") == [1, 2]
    assert await store.append("t", [ev("a"), ev("b")], idempotency_key="k1") == [1, 2]
    assert await store.append("t", [ev("c")], idempotency_key="k2") == [3]
    info = await store.info("t")
    assert info is not None and info.last_id == 3
    # Keys are per topic.
    assert await store.append("u", [ev("a")], idempotency_key="k1") == [1]


async def test_concurrent_appends_get_distinct_contiguous_ids(store: Store) -> None:
    results = await asyncio.gather(*(store.append("t", [ev(str(i)), ev(str(i))]) for i in range(20)))
    ids = sorted(i for r in results for i in r)
    assert ids == list(range(1, 41))
    for r in results:
        assert r[1] == r[0] + 1  # a batch is contiguous


async def test_close_then_append_is_refused_and_nothing_written(store: Store) -> None:
    await store.append("t", [ev("a")])
    info = await store.close_topic("t", "completed")
    assert info.status == "completed" and info.closed_at is not None
    with pytest.raises(TopicClosed):
        await store.append("t", [ev("b")])
    page = await store.read("t", 0, 10)
    assert page is not None and [e.id for e in page.events] == [1] and page.status == "completed"
    # Closing again changes nothing.
    again = await store.close_topic("t", "failed")
    assert again.status == "completed"


async def test_append_with_close_is_one_step(store: Store) -> None:
    assert await store.append("t", [ev("done", "done")], close="completed") == [1]
    info = await store.info("t")
    assert info is not None and info.status == "completed" and info.last_id == 1


async def test_idempotent_retry_after_close_still_answers(store: Store) -> None:
    assert await store.append("t", [ev("done", "done")], idempotency_key="final", close="completed") == [1]
    assert await store.append("t", [ev("done", "done")], idempotency_key="final", close="completed") == [1]


async def test_close_and_delete_unknown_topic(store: Store) -> None:
    with pytest.raises(TopicNotFound):
        await store.close_topic("nope", "completed")
    assert await store.delete_topic("nope") is False


async def test_delete_removes_everything_and_ids_restart(store: Store) -> None:
    await store.append("t", [ev("a")], idempotency_key="k")
    assert await store.delete_topic("t") is True
    assert await store.info("t") is None
    assert await store.read("t", 0, 10) is None
    assert await store.append("t", [ev("b")], idempotency_key="k") == [1]


async def test_max_events_trims_oldest_and_moves_first_id(store: Store) -> None:
    await store.append("t", [ev(str(i)) for i in range(8)])
    page = await store.read("t", 0, 100)
    assert page is not None
    assert page.first_id == 4 and page.last_id == 8
    assert [e.id for e in page.events] == [4, 5, 6, 7, 8]
    await store.append("t", [ev("9")])
    info = await store.info("t")
    assert info is not None and (info.first_id, info.last_id) == (5, 9)


async def test_topics_listing_prefix_and_paging(store: Store) -> None:
    for name in ["b/2", "a/1", "b/1", "c", "b/3"]:
        await store.append(name, [ev("x")])
    assert [t.name for t in await store.topics()] == ["a/1", "b/1", "b/2", "b/3", "c"]
    assert [t.name for t in await store.topics(prefix="b/")] == ["b/1", "b/2", "b/3"]
    assert [t.name for t in await store.topics(prefix="b/", after="b/1", limit=1)] == ["b/2"]


async def test_meta_merges_and_creates(store: Store) -> None:
    info = await store.update_meta("run", {"agent": "chat", "status": "running"})
    assert info.meta == {"agent": "chat", "status": "running"} and info.last_id == 0
    info = await store.update_meta("run", {"status": "completed", "agent": None, "result": {"a": [1]}})
    assert info.meta == {"status": "completed", "result": {"a": [1]}}
    got = await store.info("run")
    assert got is not None and got.meta == info.meta


async def test_purge_drops_closed_topics_after_ttl_and_old_keys(store: Store) -> None:
    await store.append("closed", [ev("a")], close="completed")
    await store.append("open", [ev("a")], idempotency_key="k")
    await asyncio.sleep(0.3)
    await store.purge()
    assert await store.info("closed") is None
    assert await store.info("open") is not None
    # The key expired: the same key now appends again.
    assert await store.append("open", [ev("a")], idempotency_key="k") == [2]


async def test_listener_reports_changes_in_order(store: Store) -> None:
    changes: list[Change] = []
    store.add_listener(changes.append)
    await store.follow("t", 0)
    # Five events: within max_events, so a shared store's follower cannot fall behind the trimming.
    await asyncio.gather(*(store.append("t", [ev(str(i))]) for i in range(5)))
    await store.close_topic("t", "cancelled")
    await store.delete_topic("t")
    for _ in range(100):  # a shared store reports asynchronously
        if changes and changes[-1].deleted:
            break
        await asyncio.sleep(0.02)
    ids = [e.id for c in changes for e in c.events]
    assert ids == list(range(1, 6))
    assert [c.status for c in changes if c.status] == ["cancelled"]
    assert changes[-1].deleted
    await store.unfollow("t")


async def test_idempotency_key_reused_with_another_payload_is_refused(store: Store) -> None:
    batch = [ev("a"), ev("b")]
    same = payload_fingerprint(batch)
    assert await store.append("t", batch, idempotency_key="k", fingerprint=same) == [1, 2]
    assert await store.append("t", batch, idempotency_key="k", fingerprint=same) == [1, 2]  # a retry
    other = [ev("c")]
    with pytest.raises(IdempotencyConflict):
        await store.append("t", other, idempotency_key="k", fingerprint=payload_fingerprint(other))
    # A caller that keeps no fingerprint (or a key kept without one) is answered as before.
    assert await store.append("t", other, idempotency_key="k") == [1, 2]
    assert await store.append("t", other, idempotency_key="k2") == [3]
    assert await store.append("t", batch, idempotency_key="k2", fingerprint=same) == [3]
    info = await store.info("t")
    assert info is not None and info.last_id == 3  # the refused reuse wrote nothing
    # The fingerprint covers the close status and the order of the events.
    assert payload_fingerprint(batch) != payload_fingerprint(batch, "completed")
    assert payload_fingerprint(batch) != payload_fingerprint(batch[::-1])
    assert payload_fingerprint([ev("ab")]) != payload_fingerprint([ev("a"), ev("b")])


async def test_every_log_has_an_epoch_and_a_new_log_a_new_one(store: Store) -> None:
    changes: list[Change] = []
    store.add_listener(changes.append)
    await store.follow("t", 0)
    await store.append("t", [ev("a")])
    info = await store.info("t")
    assert info is not None and len(info.epoch) == 16
    page = await store.read("t", 0, 10)
    assert page is not None and page.epoch == info.epoch
    await store.delete_topic("t")
    await store.update_meta("t", {"k": 1})  # created again, without an event
    again = await store.info("t")
    assert again is not None and again.epoch and again.epoch != info.epoch
    for _ in range(100):  # a shared store reports asynchronously
        if any(c.events for c in changes):
            break
        await asyncio.sleep(0.02)
    assert {c.epoch for c in changes if c.events} == {info.epoch}
    assert not any(c.reset for c in changes)  # a delete is a delete, not a lost log
    await store.unfollow("t")


async def test_a_page_bounded_in_bytes_holds_at_least_one_event(store_url: str) -> None:
    s = open_store(store_url, max_events=1000)
    await s.start()
    try:
        sizes = [1000] * 40 + [50_000] + [10] * 30  # 40 alike, one large, then many small
        await s.append("t", [ev(str(i % 10) * size) for i, size in enumerate(sizes)])
        page = await s.read("t", 0, 1000, max_bytes=10_000)
        assert page is not None and [e.id for e in page.events] == list(range(1, 10)), [e.id for e in page.events]
        page = await s.read("t", 40, 1000, max_bytes=10_000)  # the large one is larger than the bound: alone
        assert page is not None and [e.id for e in page.events] == [41]
        page = await s.read("t", 41, 1000, max_bytes=10_000)
        assert page is not None and [e.id for e in page.events] == list(range(42, 72))
        page = await s.read("t", 0, 5, max_bytes=10**9)  # the count still bounds it
        assert page is not None and [e.id for e in page.events] == [1, 2, 3, 4, 5]
        page = await s.read("t", 0, 1000)
        assert page is not None and len(page.events) == 71 and page.last_id == 71
        await s.delete_topic("t")
    finally:
        await s.aclose()
