"""GET /metrics over a real socket: the Prometheus text format, figures that move, one registry per hub."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ssehub import Hub, Run
from ssehub.asgi import create_app
from support import read_sse, serve_app


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            figures[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return figures


async def test_figures_follow_what_happens() -> None:
    hub = Hub("memory://")
    release = asyncio.Event()

    @hub.agent("slow")
    async def slow(run: Run, body: dict[str, object]) -> None:
        await release.wait()

    async with serve_app(create_app(hub)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        before = await scrape(c)
        assert before["ssehub_events_published_total"] == 0
        assert before["ssehub_subscribers"] == 0 and before["ssehub_draining"] == 0
        assert before["ssehub_runs_active{agent=slow}"] == 0

        reader = asyncio.create_task(read_sse(c, "/topics/t/events?after=0", count=2))
        while hub.subscriber_count == 0:
            await asyncio.sleep(0.01)
        during = await scrape(c)
        assert during["ssehub_subscribers"] == 1 and during["ssehub_active_topics"] == 1
        assert during["ssehub_streams_opened_total"] == 1
        for i in range(2):
            assert (await c.post("/topics/t/events", json={"data": i})).status_code == 200
        await reader
        started = await c.post("/agents/slow", headers={"prefer": "respond-async"})
        assert started.status_code == 202
        after = await scrape(c)
        # Starting a run writes its metadata, no events: only the two publishes count.
        assert after["ssehub_events_published_total"] == 2
        assert after["ssehub_runs_active{agent=slow}"] == 1
        release.set()


async def test_two_hubs_in_one_process_do_not_share_figures() -> None:
    one, two = Hub("memory://"), Hub("memory://")
    async with (
        serve_app(create_app(one)) as a,
        serve_app(create_app(two)) as b,
        httpx.AsyncClient(base_url=a) as ca,
        httpx.AsyncClient(base_url=b) as cb,
    ):
        await ca.post("/topics/t/events", json={"data": 1})
        assert (await scrape(ca))["ssehub_events_published_total"] == 1
        assert (await scrape(cb))["ssehub_events_published_total"] == 0
