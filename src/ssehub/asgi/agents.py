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

Rights (`ssehub.access`, checked with `auth.py`): starting needs the agent's name in `agents`; a run's
document and events need `subscribe` on `runs/{id}`, its cancel `cancel` there.
The subject (`sub`) that started a run owns it and may do both. When the hub can
mint tokens, the answer to a start carries `X-Run-Token` (and `"token"` in a 202):
a token that reads and cancels that one run, for the browser that asked, or for
the one a back end starts it for. An Idempotency-Key belongs to the principal that
sent it: another's same key starts a run of its own.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..access import AGENTS, CANCEL, SUBSCRIBE, Principal
from ..events import TopicInfo
from ..exceptions import TopicNotFound
from ..formats import Cursor
from ..hub import Hub
from ..runs import RUN_PREFIX, Run, RunManager, run_document
from .auth import Access, scoped_key
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


def agent_routes(hub: Hub, access: Access) -> list[BaseRoute]:
    manager: RunManager = hub.runs

    async def run_info(request: Request, right: str) -> tuple[TopicInfo, Principal]:
        """The run of the path, if the caller has `right` on it or started it; 401 / 403 / 404 otherwise."""
        run_id = request.path_params["run_id"]
        principal = access.principal(request)
        if principal.may(right, RUN_PREFIX + run_id):
            return await manager.info(run_id), principal
        try:
            info: TopicInfo | None = await manager.info(run_id)
        except TopicNotFound:
            info = None  # answered as a 403 below: no way to learn which run ids exist
        owner = info.meta.get("started_by") if info is not None else None
        access.require(request, right, RUN_PREFIX + run_id, owner=owner if isinstance(owner, str) else None)
        assert info is not None
        return info, principal

    async def start(request: Request) -> Response:
        name = request.path_params["name"]
        principal = access.require(request, AGENTS, name)
        format, compact = request_format(request)
        body = await read_json_object(request, hub.config.max_request_bytes, "an agent call")
        key = scoped_key(idempotency_key(request), principal)
        owned = {"started_by": principal.subject} if principal.subject is not None else None
        started = await manager.start_run(name, body, idempotency_key=key, meta=owned)
        # A repeated Idempotency-Key answers with the run the first call started, in whatever form is asked for.
        run_id = started if isinstance(started, str) else started.id
        location = _run_url(request, run_id)
        headers = {"x-run-id": run_id, "location": location}
        token = access.policy.run_token(RUN_PREFIX + run_id)
        if token is not None:
            headers["x-run-token"] = token
        if format != "native" or compact:
            reading = reading_for(RUN_PREFIX + run_id, format, compact, Cursor(), {})
            return SubscriptionResponse(
                hub, RUN_PREFIX + run_id, None, headers, reading=reading, until=principal.expires
            )
        if "text/event-stream" in request.headers.get("accept", ""):
            return SubscriptionResponse(hub, RUN_PREFIX + run_id, 0, headers, until=principal.expires)
        if "respond-async" in request.headers.get("prefer", "").lower():
            status = "running" if isinstance(started, Run) else run_document(await manager.info(run_id))["status"]
            document = {"id": run_id, "status": status, "events_url": f"{location}/events"}
            if token is not None:
                document["token"] = token
            return JSONResponse(document, status_code=202, headers={**headers, "preference-applied": "respond-async"})
        info = await manager.wait(started) if isinstance(started, Run) else await manager.wait_for(run_id)
        return JSONResponse(run_document(info, mount_prefix(request)), headers=headers)

    async def get_run(request: Request) -> Response:
        info, _ = await run_info(request, SUBSCRIBE)
        return JSONResponse(run_document(info, mount_prefix(request)))

    async def events(request: Request) -> Response:
        info, principal = await run_info(request, SUBSCRIBE)
        headers = {"x-run-id": request.path_params["run_id"]}
        format, compact = request_format(request)
        if format != "native" or compact:
            reading = reading_for(info.name, format, compact, request_position(request) or Cursor(), info.meta)
            return SubscriptionResponse(hub, info.name, None, headers, reading=reading, until=principal.expires)
        after = request_cursor(request)
        return SubscriptionResponse(hub, info.name, after or 0, headers, until=principal.expires)

    async def cancel(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        before, _ = await run_info(request, CANCEL)
        info = await manager.cancel(run_id)
        doc = run_document(info, mount_prefix(request))
        return JSONResponse({"id": doc["id"], "status": doc["status"]}, status_code=200 if before.closed else 202)

    async def list_agents(request: Request) -> Response:
        principal = access.principal(request)
        agents = [
            {"name": a.name, "timeout": a.timeout, "max_concurrent": a.max_concurrent}
            for a in sorted(manager.agents.values(), key=lambda a: a.name)
            if principal.may(AGENTS, a.name)
        ]
        return JSONResponse({"agents": agents})

    return [
        Route("/agents", list_agents, methods=["GET"]),
        Route("/agents/{name}", start, methods=["POST"]),
        Route("/runs/{run_id}/events", events, methods=["GET"]),
        Route("/runs/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/runs/{run_id}", get_run, methods=["GET"]),
    ]
