"""The agent and run endpoints.

    GET  /agents                 the registered agents
    POST /agents/{name}          start a run (an Idempotency-Key makes a retried call find the same run);
                                 the answer depends on what the client asks for:
                                   Accept: text/event-stream  -> the run's events as SSE (X-Run-Id, Location)
                                     (or ?format=ai-sdk|ag-ui, which are streams whatever Accept says)
                                   Prefer: respond-async      -> 202, Location: /runs/{id}, {"id", "status"}
                                   otherwise                  -> wait; 200 with the run document
    GET  /runs/{id}              the run document {"id", "agent", "status", "result", "error", ...}
    GET  /runs/{id}/events       the run's events as SSE, from the start unless Last-Event-ID / ?after= say otherwise;
                                 ?format=native|ai-sdk|ag-ui and ?compact=1|0 as for topics
    POST /runs/{id}/cancel       stop the run; 202, or 200 with the final status if it had already ended

A waited-for run answers 200 whatever its outcome (`completed`, `failed`,
`cancelled`): the HTTP call itself worked, and the document says how the run
ended. Errors of the call (unknown agent, bad body, too many runs) are 4xx.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..formats import Cursor
from ..hub import Hub
from ..runs import RUN_PREFIX, Run, RunManager, run_document
from .requests import (
    idempotency_key,
    mount_prefix,
    read_json_object,
    request_cursor,
    request_format,
    request_position,
)
from .subscriptions import SubscriptionResponse, reading_for

__all__ = ["agent_routes"]


def _run_url(request: Request, run_id: str) -> str:
    return f"{mount_prefix(request)}/runs/{run_id}"


def agent_routes(hub: Hub) -> list[BaseRoute]:
    manager: RunManager = hub.runs

    async def start(request: Request) -> Response:
        name = request.path_params["name"]
        format, compact = request_format(request)
        body = await read_json_object(request, hub.config.max_request_bytes, "an agent call")
        key = idempotency_key(request)
        started = await manager.start_run(name, body, idempotency_key=key)
        # A repeated Idempotency-Key answers with the run the first call started, in whatever form is asked for.
        run_id = started if isinstance(started, str) else started.id
        location = _run_url(request, run_id)
        headers = {"x-run-id": run_id, "location": location}
        if format != "native" or compact:
            reading = reading_for(RUN_PREFIX + run_id, format, compact, Cursor(), {})
            return SubscriptionResponse(hub, RUN_PREFIX + run_id, None, headers, reading=reading)
        if "text/event-stream" in request.headers.get("accept", ""):
            return SubscriptionResponse(hub, RUN_PREFIX + run_id, 0, headers)
        if "respond-async" in request.headers.get("prefer", "").lower():
            status = "running" if isinstance(started, Run) else run_document(await manager.info(run_id))["status"]
            return JSONResponse(
                {"id": run_id, "status": status, "events_url": f"{location}/events"},
                status_code=202,
                headers={**headers, "preference-applied": "respond-async"},
            )
        info = await manager.wait(started) if isinstance(started, Run) else await manager.wait_for(run_id)
        return JSONResponse(run_document(info, mount_prefix(request)), headers=headers)

    async def get_run(request: Request) -> Response:
        info = await manager.info(request.path_params["run_id"])
        return JSONResponse(run_document(info, mount_prefix(request)))

    async def events(request: Request) -> Response:
        info = await manager.info(request.path_params["run_id"])
        headers = {"x-run-id": request.path_params["run_id"]}
        format, compact = request_format(request)
        if format != "native" or compact:
            reading = reading_for(info.name, format, compact, request_position(request) or Cursor(), info.meta)
            return SubscriptionResponse(hub, info.name, None, headers, reading=reading)
        after = request_cursor(request)
        return SubscriptionResponse(hub, info.name, after or 0, headers)

    async def cancel(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        before = await manager.info(run_id)
        info = await manager.cancel(run_id)
        doc = run_document(info, mount_prefix(request))
        return JSONResponse({"id": doc["id"], "status": doc["status"]}, status_code=200 if before.closed else 202)

    async def list_agents(request: Request) -> Response:
        agents = [
            {"name": a.name, "timeout": a.timeout, "max_concurrent": a.max_concurrent}
            for a in sorted(manager.agents.values(), key=lambda a: a.name)
        ]
        return JSONResponse({"agents": agents})

    return [
        Route("/agents", list_agents, methods=["GET"]),
        Route("/agents/{name}", start, methods=["POST"]),
        Route("/runs/{run_id}/events", events, methods=["GET"]),
        Route("/runs/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/runs/{run_id}", get_run, methods=["GET"]),
    ]
