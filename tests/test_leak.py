"""Connections come and go by the thousand; nothing may stay behind."""

from __future__ import annotations

import asyncio
import gc
import resource

from ssehub import Hub, HubConfig
from ssehub.asgi import create_app
from support import serve_app

CYCLES = 10_000
WORKERS = 50


async def test_ten_thousand_connect_disconnect_cycles_leave_nothing() -> None:
    hub = Hub("memory://", HubConfig(heartbeat=30))
    app = create_app(hub)
    async with serve_app(app) as url:
        port = int(url.rsplit(":", 1)[1])
        request = b"GET /topics/leak/events?after=0 HTTP/1.1\r\nHost: x\r\naccept: text/event-stream\r\n\r\n"

        async def cycle() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            data = b""
            while b"retry:" not in data:  # the stream is open: we are a subscriber now
                chunk = await reader.read(4096)
                assert chunk, data
                data += chunk
            writer.close()
            await writer.wait_closed()

        async def worker(n: int) -> None:
            for _ in range(n):
                await cycle()

        await hub.publish("leak", "message", "x")
        # Warm up, then take the baseline.
        await asyncio.gather(*(worker(10) for _ in range(WORKERS)))
        await asyncio.sleep(0.5)
        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        await asyncio.gather(*(worker(CYCLES // WORKERS) for _ in range(WORKERS)))

        for _ in range(100):  # the server notices the last disconnects shortly after
            if hub.subscribers("leak") == 0 and len(asyncio.all_tasks()) <= tasks_before:
                break
            await asyncio.sleep(0.05)
        gc.collect()
        assert hub.subscribers("leak") == 0
        assert hub._tails == {}
        assert len(asyncio.all_tasks()) <= tasks_before
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        assert grown_kb < 30_000, f"peak RSS grew by {grown_kb} KiB over {CYCLES} cycles"
