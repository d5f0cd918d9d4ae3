"""The tail on its own: a window of encoded frames over contiguous ids, and one wake-up per loop iteration."""

from __future__ import annotations

import asyncio

import pytest

from ssehub.events import Event
from ssehub.tail import Tail, encode_event, encode_events


def ev(i: int, name: str = "message") -> Event:
    return Event(i, name, f"d{i}")


def frames(*ids: int) -> bytes:
    return encode_events(ev(i) for i in ids)


@pytest.mark.parametrize(
    ("event", "frame"),
    [
        (Event(1, "message", "x"), b"id: 1\ndata: x\n\n"),  # `message` is the default name: not written
        (Event(7, "tok", "a\nb"), b"id: 7\nevent: tok\ndata: a\ndata: b\n\n"),
        (Event(2, "n", ""), b"id: 2\nevent: n\ndata: \n\n"),
    ],
)
def test_encode_event(event: Event, frame: bytes) -> None:
    assert encode_event(event) == frame


async def test_after_maps_a_cursor_to_the_frames_that_follow_it() -> None:
    tail = Tail("t", window=10)
    tail.push(tuple(ev(i) for i in range(1, 6)))
    assert tail.last_id == 5
    assert tail.after(0) == (frames(1, 2, 3, 4, 5), 5)
    assert tail.after(3) == (frames(4, 5), 5)
    assert tail.after(5) == (b"", 5)  # up to date: nothing, same cursor
    assert tail.after(9) == (b"", 9)  # beyond the end: the hub decides what that means


async def test_a_cursor_before_the_window_must_read_the_store() -> None:
    tail = Tail("t", window=4)
    tail.push(tuple(ev(i) for i in range(1, 21)))
    assert tail.after(1) is None  # id 2 is no longer in memory
    got = tail.after(16)
    assert got == (frames(17, 18, 19, 20), 20)


async def test_the_window_is_trimmed_in_steps_and_never_below_its_size() -> None:
    tail = Tail("t", window=4)
    for i in range(1, 101):
        tail.push((ev(i),))
        window = tail.after(max(0, i - 4))
        assert window is not None and window[1] == i  # the last four are always there
        assert len(tail._frames) <= 4 + 4 // 2


async def test_overlapping_and_gapped_pushes() -> None:
    tail = Tail("t", window=10)
    tail.push((ev(1), ev(2), ev(3)))
    tail.push((ev(2), ev(3), ev(4)))  # a shared store's follower may repeat what it reported
    assert tail.after(0) == (frames(1, 2, 3, 4), 4)
    tail.push((ev(1),))  # entirely old: ignored
    assert tail.after(0) == (frames(1, 2, 3, 4), 4)
    tail.push((ev(9), ev(10)))  # a gap (reported later than read): the window starts afresh
    assert tail.after(8) == (frames(9, 10), 10)
    assert tail.after(4) is None
    tail.push(())
    assert tail.last_id == 10


async def test_the_events_are_kept_beside_their_frames() -> None:
    tail = Tail("t", window=4)
    tail.push(tuple(ev(i) for i in range(1, 4)))
    tail.push((ev(2), ev(3), ev(4)))  # an overlap keeps one of each
    assert tail.events_after(0, 10) == [ev(1), ev(2), ev(3), ev(4)]
    assert tail.events_after(1, 2) == [ev(2), ev(3)]  # at most `limit`
    assert tail.events_after(4, 10) == []  # up to date
    assert tail.events_after(9, 10) == []  # beyond the end: the reader decides
    tail.push(tuple(ev(i) for i in range(5, 21)))  # trimmed together with the frames
    assert tail.events_after(1, 10) is None and tail.after(1) is None
    window = tail.events_after(16, 10)
    assert window == [ev(17), ev(18), ev(19), ev(20)]
    assert tail.after(16) == (encode_events(window), 20)
    assert len(tail._events) == len(tail._frames)
    tail.push((ev(30),))  # a gap: both start afresh
    assert tail.events_after(29, 10) == [ev(30)] and tail.events_after(20, 10) is None


async def test_many_pushes_in_one_iteration_wake_each_waiter_once() -> None:
    tail = Tail("t", window=100)
    woken: list[int] = []

    async def waiter(n: int) -> None:
        await tail.wait()
        woken.append(n)

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)  # every waiter is waiting
    for i in range(1, 51):
        tail.push((ev(i),))
    assert tail._wake_scheduled
    await asyncio.gather(*tasks)
    assert sorted(woken) == [0, 1, 2]
    assert not tail._wake_scheduled and tail._waiters == []


async def test_a_cancelled_waiter_affects_no_other() -> None:
    tail = Tail("t", window=10)
    first = asyncio.ensure_future(tail.wait())
    second = asyncio.ensure_future(tail.wait())
    await asyncio.sleep(0)
    first.cancel()
    tail.wake()
    await second
    assert first.cancelled()


def test_ended() -> None:
    tail = Tail("t", window=1)
    assert not tail.ended
    tail.status = "completed"
    assert tail.ended
    other = Tail("u", window=1)
    other.deleted = True
    assert other.ended


def big(i: int, size: int) -> Event:
    return Event(i, "message", "x" * size)


async def test_the_window_is_bounded_in_bytes_too() -> None:
    tail = Tail("t", window=10_000, max_bytes=50_000)
    for i in range(1, 101):
        tail.push((big(i, 1000),))  # each counted as about 2 KB: frame and text
        assert tail.nbytes <= 50_000
    assert tail.last_id == 100
    first = 100 - len(tail._frames) + 1
    assert 15 <= len(tail._frames) <= 25  # trimmed to three quarters in steps, never above the bound
    assert tail.after(first - 2) is None  # older than the window: from the store
    assert tail.after(first - 1) == (encode_events(big(i, 1000) for i in range(first, 101)), 100)
    tail.push((big(101, 100_000),))  # one event larger than the bound: kept nowhere, read from the store
    assert tail.nbytes == 0 and tail.after(100) is None and tail.last_id == 101
    tail.push((big(102, 10),))
    assert tail.after(101) == (encode_event(big(102, 10)), 102)


async def test_after_hands_out_at_most_max_bytes_but_at_least_one_frame() -> None:
    tail = Tail("t", window=100)
    tail.push(tuple(big(i, 100) for i in range(1, 11)))
    size = len(encode_event(big(1, 100)))
    assert tail.after(0, 3 * size) == (encode_events(big(i, 100) for i in (1, 2, 3)), 3)
    assert tail.after(3, 3 * size + size - 1) == (encode_events(big(i, 100) for i in (4, 5, 6)), 6)
    assert tail.after(6, 1) == (encode_event(big(7, 100)), 7)  # one event larger than the bound goes alone
    assert tail.after(7, 10**9) == (encode_events(big(i, 100) for i in (8, 9, 10)), 10)
    assert tail.events_after(0, 100, 2 * size) == [big(1, 100), big(2, 100)]
    assert tail.events_after(0, 1, 10**9) == [big(1, 100)]
    tail.trim(0)
    assert tail.nbytes == 0 and tail.after(0) is None


async def test_the_tails_together_are_trimmed_largest_first() -> None:
    from ssehub import Hub, HubConfig

    config = HubConfig(tail_bytes=1_000_000, tail_total_bytes=400_000)
    async with Hub("memory://", config) as hub:
        async with hub.subscription("small"), hub.subscription("a"), hub.subscription("b"):
            await hub.publish("small", data="x" * 10_000)
            for _ in range(10):
                await hub.publish("a", data="x" * 10_000)
                await hub.publish("b", data="x" * 10_000)
            assert hub.tail_bytes == sum(t.nbytes for t in hub._tails.values())
            assert hub.tail_bytes <= 400_000
            tails = hub._tails
            assert tails["small"].nbytes > 0 and len(tails["small"]._frames) == 1  # the small one is left alone
            assert abs(tails["a"].nbytes - tails["b"].nbytes) <= 25_000  # the large ones lowered to one level
        assert hub.tail_bytes == 0
