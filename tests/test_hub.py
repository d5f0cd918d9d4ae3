"""The hub in-process: topic writers, cursors, the tail window and coalescing."""

from __future__ import annotations

import asyncio

import pytest

from ssehub import Hub, HubConfig, InvalidInput, NewEvent, TopicClosed
from ssehub.sse import Decoder


async def test_topic_writer_closes_with_the_outcome_of_its_block() -> None:
    async with Hub("memory://") as hub:
        async with hub.topic("ok") as t:
            assert await t.publish("log", {"line": 1}) == 1
        assert (await hub.info("ok")).status == "completed"

        with pytest.raises(RuntimeError):
            async with hub.topic("bad") as t:
                await t.publish("log", 1)
                raise RuntimeError("boom")
        assert (await hub.info("bad")).status == "failed"

        async def cancelled() -> None:
            async with hub.topic("stop") as t:
                await t.publish("log", 1)
                await asyncio.sleep(10)

        task = asyncio.create_task(cancelled())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await hub.info("stop")).status == "cancelled"
        with pytest.raises(TopicClosed):
            await hub.publish("stop", "log", 2)


async def test_publish_validates_before_writing() -> None:
    async with Hub("memory://", HubConfig(max_batch=2, max_event_bytes=10)) as hub:
        with pytest.raises(InvalidInput):
            await hub.publish_many("t", [])
        with pytest.raises(InvalidInput):
            await hub.publish_many("t", [NewEvent("a", "1")] * 3)
        with pytest.raises(InvalidInput):
            await hub.publish("t", "message", "x" * 20)
        with pytest.raises(InvalidInput):
            await hub.publish("bad topic", "message", 1)
        with pytest.raises(InvalidInput):
            await hub.publish("t", "message", float("nan"))
        assert await hub.store.info("t") is None


async def test_pending_events_are_written_as_one_chunk() -> None:
    async with Hub("memory://") as hub, hub.subscription("t", after=0) as sub:
        chunks = sub.chunks()
        await hub.publish_many("t", [NewEvent("message", str(i)) for i in range(50)])
        chunk = await anext(chunks)
        events = Decoder().feed(chunk)
        assert [e.id for e in events] == [str(i) for i in range(1, 51)]
        await chunks.aclose()


async def test_a_cursor_behind_the_window_reads_the_store_then_the_tail(tmp_path: object) -> None:
    config = HubConfig(tail_window=10, page_size=7)
    async with Hub("memory://", config) as hub, hub.subscription("t", after=0) as live:  # keeps the tail active
        for i in range(100):
            await hub.publish("t", "message", i)
        async with hub.subscription("t", after=3) as late:
            decoder, ids = Decoder(), []
            chunks = late.chunks()
            while len(ids) < 97:
                ids += [int(e.id) for e in decoder.feed(await anext(chunks))]
            await chunks.aclose()
        assert ids == list(range(4, 101))
        assert live.cursor == 0
    assert hub._tails == {}


async def test_drain_ends_streams_with_a_retry_hint() -> None:
    async with Hub("memory://", HubConfig(retry_ms=1234)) as hub, hub.subscription("t") as sub:
        chunks = sub.chunks()
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.05)
        hub.drain()
        hint = await waiting
        assert hint.startswith(b"retry: ") and hint.endswith(b"\n\n")
        assert 1234 <= int(hint[7:-2]) <= 2468  # jittered, so that the reconnects spread out
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)
