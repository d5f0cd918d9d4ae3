"""End to end against real `ssehub serve` processes on the embedded SQLite store."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import httpx

from support import ServerProcess, read_sse

Server = Callable[..., ServerProcess]


async def publish(c: httpx.AsyncClient, url: str, topic: str, data: str) -> int:
    r = await c.post(f"{url}/topics/{topic}/events", content=data, headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    ids: list[int] = r.json()["ids"]
    return ids[0]


async def test_publish_subscribe_resume_close(server: Server, tmp_path: object) -> None:
    srv = server("--store", "sqlite:///hub.db")
    async with httpx.AsyncClient(timeout=10) as c:
        reader = asyncio.create_task(read_sse(c, f"{srv.url}/topics/job/events?after=0", count=3))
        for i in range(5):
            await publish(c, srv.url, "job", f"line {i}")
        first = await reader
        assert [(e.id, e.data) for e in first.events] == [("1", "line 0"), ("2", "line 1"), ("3", "line 2")]
        # The connection dropped after id 3: resume from there, nothing lost or repeated.
        closer = asyncio.create_task(c.post(f"{srv.url}/topics/job/close"))
        rest = await read_sse(c, f"{srv.url}/topics/job/events", headers={"last-event-id": first.events[-1].id})
        await closer
        assert rest.ended and [(e.id, e.data) for e in rest.events] == [("4", "line 3"), ("5", "line 4")]
        end = await read_sse(c, f"{srv.url}/topics/job/events", headers={"last-event-id": "5"})
        assert end.status == 204


async def test_sigterm_drains_streams_with_a_retry_hint(server: Server) -> None:
    srv = server("--store", "sqlite:///hub.db", "--retry", "750")
    async with httpx.AsyncClient(timeout=10) as c:
        await publish(c, srv.url, "t", "a")
        reader = asyncio.create_task(read_sse(c, f"{srv.url}/topics/t/events?after=0"))
        await asyncio.sleep(0.5)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        got = await asyncio.wait_for(reader, 10)
        assert got.ended and [e.data for e in got.events] == ["a"]
        hint = got.raw.rpartition(b"\nretry: ")[2]  # jittered, from the hint to twice it
        assert hint.endswith(b"\n\n") and 750 <= int(hint) <= 1500
        # uvicorn re-raises the signal once it has shut down cleanly, so supervisors see why it exited.
        assert await asyncio.to_thread(srv.proc.wait, 10) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in srv.output()


async def test_restart_mid_stream_resumes_with_nothing_lost_or_repeated(server: Server) -> None:
    srv = server("--store", "sqlite:///hub.db")
    seen: list[str] = []
    total = 60
    async with httpx.AsyncClient(timeout=10) as c:

        async def produce() -> None:
            for i in range(total):
                while True:
                    try:
                        await publish(c, srv.url, "run", f"tok{i}")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)  # the server is restarting; acknowledged events are durable
                await asyncio.sleep(0.01)

        async def consume() -> None:
            last = "0"
            while len(seen) < total:
                try:
                    got = await read_sse(
                        c, f"{srv.url}/topics/run/events", count=total - len(seen), headers={"last-event-id": last}
                    )
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
                    continue
                seen.extend(e.data for e in got.events)
                if got.events:
                    last = got.events[-1].id

        producer = asyncio.create_task(produce())
        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(srv.restart)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(srv.restart)
        await asyncio.wait_for(producer, 60)
        await asyncio.wait_for(consumer, 60)
        # Ids continue across restarts.
        assert await publish(c, srv.url, "run", "after") == total + 1
    assert seen == [f"tok{i}" for i in range(total)]


async def test_kill_9_keeps_acknowledged_events(server: Server) -> None:
    srv = server("--store", "sqlite:///hub.db")
    async with httpx.AsyncClient(timeout=10) as c:
        ids = [await publish(c, srv.url, "t", str(i)) for i in range(20)]
        assert ids == list(range(1, 21))
        srv.kill()
        srv.start()
        page = (
            await c.get(f"{srv.url}/topics/t/events?after=0&limit=100", headers={"accept": "application/json"})
        ).json()
        assert [e["data"] for e in page["events"]] == [str(i) for i in range(20)]
