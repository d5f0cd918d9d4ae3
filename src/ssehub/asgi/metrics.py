"""`GET /metrics`: the hub's counters in the Prometheus text format.

The hot paths only bump plain integers on `Hub.stats` (`ssehub.hub.Stats`); the figures are read
when Prometheus scrapes, by a collector registered in a registry of the hub's
own (not the process-wide default one, so several hubs in one process, as in
tests, do not collide). With `--workers N` each process reports for itself.
Once access control is on, only an API key (the `admin` right) may read them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..access import ADMIN
from ..hub import Hub
from .auth import Access

__all__ = ["metrics_routes"]


class _HubCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub, stats = self.hub, self.hub.stats
        yield CounterMetricFamily(
            "ssehub_events_published",
            "Events acknowledged to publishers by this process.",
            value=stats.events_published,
        )
        yield CounterMetricFamily(
            "ssehub_streams_opened", "SSE subscriptions opened on this process.", value=stats.streams_opened
        )
        yield CounterMetricFamily(
            "ssehub_resets_sent", "Reset events sent for history that retention dropped.", value=stats.resets_sent
        )
        yield GaugeMetricFamily("ssehub_subscribers", "Open SSE subscriptions.", value=hub.subscriber_count)
        yield GaugeMetricFamily(
            "ssehub_active_topics", "Topics with subscribers on this process.", value=hub.active_topics
        )
        runs = GaugeMetricFamily("ssehub_runs_active", "Agent runs executing on this process.", labels=["agent"])
        for name in hub.runs.agents:
            runs.add_metric([name], sum(1 for r in hub.runs.runs.values() if r.agent.name == name))
        yield runs
        yield GaugeMetricFamily(
            "ssehub_tail_bytes",
            "Bytes of recent events held in memory for this process's topics (bounded by --tail-total-bytes).",
            value=hub.tail_bytes,
        )
        yield CounterMetricFamily(
            "ssehub_streams_stalled",
            "Streams cut because their client took no data for --stall-timeout.",
            value=stats.streams_stalled,
        )
        yield GaugeMetricFamily("ssehub_draining", "1 while the server is shutting down.", value=int(hub.draining))


def metrics_routes(hub: Hub, access: Access) -> list[Route]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HubCollector(hub))

    async def metrics(request: Request) -> Response:
        access.require(request, ADMIN, "metrics")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]
