"""Endpoints shaped for the two agent front-end protocols: the AI SDK's `useChat`, and AG-UI.

    POST /chat/{agent}                       useChat's request (DefaultChatTransport, `api` = this URL): start
                                             a run of `agent` with the chat's messages; the answer is the run
                                             as the AI SDK UI message stream
    GET  /chat/{agent}/{chat_id}/stream      the transport's reconnect: the chat's run while it runs, from its
                                             start (useChat replays it), or after Last-Event-ID; else 204
    POST /chat/{agent}/{chat_id}/cancel      stop the chat's run (the transport's own stop only disconnects)
    POST /ag-ui/{agent}                      AG-UI's RunAgentInput (HttpAgent, `url` = this URL): start a run
                                             of `agent`; the answer is the run as AG-UI events
    GET  /ag-ui/{agent}/{thread_id}/stream   the thread's run after Last-Event-ID (the resume AG-UI lacks),
                                             or from its start while it runs; else 204
    POST /ag-ui/{agent}/{thread_id}/cancel   stop the thread's run

A chat (an AG-UI thread) has one current run: the one its last request started. Which one
that is lives in the store, in the metadata of the topic ``chats/{agent}/{id}`` (or
``threads/{agent}/{id}``), so a reconnect finds it from any process or node. A request that
starts a new run while the chat's previous one is still going cancels that one: it is being
answered anew. Every frame has the id of the run's log (see `ssehub.formats`), so a reader
that keeps what it received resumes with `Last-Event-ID` exactly where it stopped.

Rights (`ssehub.access`, checked with `auth.py`): starting needs the agent's name in `agents`;
a conversation is named by its topic (`chats/{agent}/{id}`, `threads/{agent}/{id}`), and
belongs to the subject (`sub`) that started it: continuing it needs that subject or `publish`
on the topic, resuming it `subscribe`, cancelling it `cancel`. A conversation nobody has
started yet is whoever starts it. The streams end with the token (see `Subscription.events`),
and a start answers `X-Run-Token` as `POST /agents/{name}` does.

The agent gets a plain body, the same for both (its `validate` hook sees it first):

    {"messages": [{"role", "content"}, ...],   the conversation as a chat-completions API takes it: the
                                               text of each message (AG-UI's tool calls and tool results
                                               as `tool_calls` / `tool_call_id`)
     "raw_messages": [...],                    the client's own messages, unchanged (useChat's UIMessages
                                               with their parts, AG-UI's messages)
     useChat:  "chat_id", "trigger", "message_id" (if sent), and any other field of the request body
     AG-UI:    "thread_id", "run_id", "tools", "context", "state", "forwarded_props"}
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..access import AGENTS, CANCEL, PUBLISH, SUBSCRIBE, Principal
from ..events import TopicInfo
from ..exceptions import InvalidInput, TopicNotFound
from ..formats import Cursor
from ..hub import Hub
from ..runs import RUN_PREFIX, RunManager
from .auth import Access, scoped_key
from .requests import idempotency_key, mount_prefix, read_json_object, request_format, request_position
from .subscriptions import AG_UI_META, SubscriptionResponse, reading_for

__all__ = ["chat_routes"]

_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_ROLES = frozenset({"system", "user", "assistant"})
_AG_UI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def _valid_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidInput(f"{what} must be 1-100 characters of A-Z a-z 0-9 . _ : -")
    return value


class Conversations:
    """The current run of each conversation of one protocol, kept in the store as topic metadata."""

    def __init__(self, hub: Hub, access: Access, kind: str, format: str) -> None:
        self.hub, self.access, self.kind, self.format = hub, access, kind, format
        self.manager: RunManager = hub.runs

    def topic(self, agent: str, conversation: str) -> str:
        return f"{self.kind}/{agent}/{conversation}"

    async def run_of(self, agent: str, conversation: str) -> TopicInfo | None:
        """The topic of the conversation's last run, if there is one still stored."""
        try:
            run_id = (await self.hub.info(self.topic(agent, conversation))).meta.get("run")
            return await self.manager.info(run_id) if isinstance(run_id, str) else None
        except TopicNotFound:
            return None

    async def check(self, request: Request, right: str, agent: str, conversation: str) -> tuple[Principal, bool]:
        """The caller, if it may do `right` to the conversation (or started it); and whether it exists yet."""
        principal = self.access.principal(request)
        topic = self.topic(agent, conversation)
        try:
            meta: dict[str, Any] | None = (await self.hub.info(topic)).meta
        except TopicNotFound:
            meta = None
        if meta is None and right == PUBLISH:
            return principal, False  # nobody's yet: it becomes its starter's
        owner = meta.get("started_by") if meta is not None else None
        self.access.require(request, right, topic, owner=owner if isinstance(owner, str) else None)
        return principal, meta is not None

    async def start(
        self, request: Request, agent: str, conversation: str, body: dict[str, Any], meta: dict[str, Any]
    ) -> Response:
        """Start a run of `agent` for the conversation, make it the current one, and stream it."""
        principal = self.access.require(request, AGENTS, agent)
        _, exists = await self.check(request, PUBLISH, agent, conversation)
        previous = await self.run_of(agent, conversation)
        owned = {"started_by": principal.subject} if principal.subject is not None else {}
        key = scoped_key(idempotency_key(request), principal)
        started = await self.manager.start_run(agent, body, idempotency_key=key, meta={**meta, **owned})
        run_id = started if isinstance(started, str) else started.id
        if previous is None or previous.name != RUN_PREFIX + run_id:
            current: dict[str, Any] = {"run": run_id, "updated": time.time(), **({} if exists else owned)}
            await self.hub.update_meta(self.topic(agent, conversation), current)
            if previous is not None and not previous.closed:
                with contextlib.suppress(TopicNotFound):
                    await self.manager.cancel(previous.name[len(RUN_PREFIX) :])
        info = await self.manager.info(run_id)
        return self._stream(request, info, Cursor(), principal, self.access.policy.run_token(info.name))

    async def resume(self, request: Request) -> Response:
        """The reconnect: after Last-Event-ID, or the whole run while it runs; 204 when there is none."""
        agent, conversation = request.path_params["agent"], _valid_id(request.path_params["id"], "the id")
        principal, _ = await self.check(request, SUBSCRIBE, agent, conversation)
        cursor = request_position(request)
        info = await self.run_of(agent, conversation)
        if info is None or (cursor is None and info.closed):
            return Response(status_code=204)
        return self._stream(request, info, cursor or Cursor(), principal)

    async def cancel(self, request: Request) -> Response:
        agent, conversation = request.path_params["agent"], _valid_id(request.path_params["id"], "the id")
        await self.check(request, CANCEL, agent, conversation)
        info = await self.run_of(agent, conversation)
        if info is None:
            raise TopicNotFound(f"{self.kind[:-1]} {conversation!r} of agent {agent!r} has no run")
        run_id = info.name[len(RUN_PREFIX) :]
        after = await self.manager.cancel(run_id)
        status = after.status if after.closed else "running"
        return JSONResponse({"id": run_id, "status": status}, status_code=200 if info.closed else 202)

    def _stream(
        self, request: Request, info: TopicInfo, cursor: Cursor, principal: Principal, token: str | None = None
    ) -> Response:
        run_id = info.name[len(RUN_PREFIX) :]
        _, compact = request_format(request)
        headers = {"x-run-id": run_id, "location": f"{mount_prefix(request)}/runs/{run_id}"}
        if token is not None:
            headers["x-run-token"] = token
        reading = reading_for(info.name, self.format, compact, cursor, info.meta)
        return SubscriptionResponse(self.hub, info.name, None, headers, reading=reading, until=principal.expires)


# -- useChat ----------------------------------------------------------------------------------------------------


def chat_body(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The chat id and the agent's body of a useChat request (`DefaultChatTransport`'s JSON)."""
    chat_id = _valid_id(payload.get("id"), "the chat id (`id`)")
    raw = payload.get("messages")
    if not isinstance(raw, list):
        raise InvalidInput("`messages` must be the list of the chat's UI messages")
    messages = [_ui_message(m) for m in raw]
    trigger = payload.get("trigger", "submit-message")
    if trigger not in ("submit-message", "regenerate-message"):
        raise InvalidInput("`trigger` must be submit-message or regenerate-message")
    body = {k: v for k, v in payload.items() if k not in ("id", "messages", "trigger", "messageId")}
    body.update(chat_id=chat_id, trigger=trigger, messages=messages, raw_messages=raw)
    message_id = payload.get("messageId")
    if message_id is not None:
        if not isinstance(message_id, str):
            raise InvalidInput("`messageId` must be a string")
        body["message_id"] = message_id
    return chat_id, body


def _ui_message(message: Any) -> dict[str, str]:
    if not isinstance(message, dict) or message.get("role") not in _ROLES or not isinstance(message.get("parts"), list):
        raise InvalidInput(
            'each of `messages` is a UI message {"id", "role": "user" | "assistant" | "system", "parts"}'
        )
    text = "".join(
        p["text"] for p in message["parts"] if isinstance(p, dict) and p.get("type") == "text" and _is_str(p, "text")
    )
    return {"role": message["role"], "content": text}


# -- AG-UI ------------------------------------------------------------------------------------------------------


def ag_ui_body(payload: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The thread id, the client's run id and the agent's body of an AG-UI `RunAgentInput`."""
    thread_id = _valid_id(payload.get("threadId"), "`threadId`")
    run_id = payload.get("runId")
    if not isinstance(run_id, str) or not 1 <= len(run_id) <= 200:
        raise InvalidInput("`runId` must be a string of 1-200 characters")
    raw = payload.get("messages", [])
    if not isinstance(raw, list) or not all(isinstance(m, dict) and _is_str(m, "role") for m in raw):
        raise InvalidInput('`messages` must be a list of AG-UI messages {"id", "role", "content", ...}')
    for name in ("tools", "context"):
        if not isinstance(payload.get(name, []), list):
            raise InvalidInput(f"`{name}` must be a list")
    body = {
        "thread_id": thread_id,
        "run_id": run_id,
        "messages": [m for m in map(_ag_ui_message, raw) if m is not None],
        "raw_messages": raw,
        "tools": payload.get("tools", []),
        "context": payload.get("context", []),
        "state": payload.get("state"),
        "forwarded_props": payload.get("forwardedProps"),
    }
    return thread_id, run_id, body


def _ag_ui_message(message: dict[str, Any]) -> dict[str, Any] | None:
    role = message["role"]
    if role not in _AG_UI_ROLES:
        return None  # reasoning, activity: what the client showed, not what the model is told
    content = message.get("content")
    if isinstance(content, list):  # a user message's content parts: its text parts are the text
        content = "".join(p["text"] for p in content if isinstance(p, dict) and _is_str(p, "text"))
    out: dict[str, Any] = {"role": role, "content": content if isinstance(content, str) else ""}
    if role == "assistant" and isinstance(message.get("toolCalls"), list) and message["toolCalls"]:
        out["tool_calls"] = message["toolCalls"]  # AG-UI's tool calls have the chat-completions shape already
    if role == "tool" and _is_str(message, "toolCallId"):
        out["tool_call_id"] = message["toolCallId"]
    return out


def _is_str(obj: dict[str, Any], key: str) -> bool:
    return isinstance(obj.get(key), str)


# -- routes -----------------------------------------------------------------------------------------------------


def chat_routes(hub: Hub, access: Access) -> list[BaseRoute]:
    chats = Conversations(hub, access, "chats", "ai-sdk")
    threads = Conversations(hub, access, "threads", "ag-ui")
    limit = hub.config.max_request_bytes

    async def start_chat(request: Request) -> Response:
        payload = await read_json_object(request, limit, "a useChat request")
        chat_id, body = chat_body(payload)
        return await chats.start(request, request.path_params["agent"], chat_id, body, {})

    async def start_ag_ui(request: Request) -> Response:
        payload = await read_json_object(request, limit, "an AG-UI RunAgentInput")
        thread_id, run_id, body = ag_ui_body(payload)
        meta = {AG_UI_META: {"thread_id": thread_id, "run_id": run_id}}
        return await threads.start(request, request.path_params["agent"], thread_id, body, meta)

    def routes(path: str, conversations: Conversations, start: Callable[[Request], Any]) -> list[BaseRoute]:
        return [
            Route(path + "/{agent}", start, methods=["POST"]),
            Route(path + "/{agent}/{id}/stream", conversations.resume, methods=["GET"]),
            Route(path + "/{agent}/{id}/cancel", conversations.cancel, methods=["POST"]),
        ]

    return [*routes("/chat", chats, start_chat), *routes("/ag-ui", threads, start_ag_ui)]
