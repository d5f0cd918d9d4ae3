"""What the hub serves to browsers: the `ssehub.js` client, and the demo chat page of `ssehub serve --demo`.

    GET /_ssehub/ssehub.js       the browser client (one dependency-free ES module), always
    GET /_ssehub/demo/...        the demo page's stylesheet and script
    GET /                        the demo chat page, only with `--demo`
    POST /demo/token             the demo page's token, only with `--demo`

The files live in the package (`ssehub/static`): a wheel carries them, and there is no build step.
They need no credentials. With access control on, the demo page asks `POST /demo/token` for a
short-lived token that may start the demo agent and use the topics under `demo/{browser}/`,
where `{browser}` is a random id kept in a signed, HttpOnly cookie: every tab of one browser
is the same `sub`, so it may read and cancel the runs any of them started (see agents.py),
and another browser may not. Without access control the answer is `{"token": null}`.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .auth import Access

__all__ = ["DEMO_COOKIE", "STATIC_DIR", "client_routes", "demo_routes"]

#: The cookie that tells one demo browser from another (a signed random id; no rights by itself).
DEMO_COOKIE = "ssehub_demo"

# In the package, beside this folder, so that a wheel carries them.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def client_routes() -> list[BaseRoute]:
    """`/_ssehub/...`: the browser client and the demo's assets (harmless without `--demo`)."""
    return [Mount("/_ssehub", app=StaticFiles(directory=STATIC_DIR), name="ssehub-static")]


async def _demo_page(request: Request) -> Response:
    # no-cache: the page is tiny, and a stale copy after an upgrade would load a mismatched script.
    return FileResponse(STATIC_DIR / "demo" / "index.html", headers={"cache-control": "no-cache"})


def demo_routes(access: Access, agent: str = "chat") -> list[BaseRoute]:
    """`/` and `/demo/token`: the demo chat page and its token; `ssehub serve --demo` adds them next to the agent."""
    policy = access.policy

    async def demo_token(request: Request) -> Response:
        if not policy.enabled:
            return JSONResponse({"token": None, "topics": "demo/"}, headers={"cache-control": "no-store"})
        browser = policy.unsign(request.cookies.get(DEMO_COOKIE)) or secrets.token_hex(12)
        topics = f"demo/{browser}/"
        token = policy.mint(
            agents=[agent], subscribe=[topics + "**"], publish=[topics + "**"], subject=f"demo:{browser}"
        )
        response = JSONResponse(
            {"token": token, "expires_in": policy.token_ttl, "topics": topics}, headers={"cache-control": "no-store"}
        )
        response.set_cookie(
            DEMO_COOKIE,
            policy.sign(browser),
            max_age=7 * 86400,
            path=str(request.scope.get("root_path", "")) or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return [Route("/", _demo_page, methods=["GET", "HEAD"]), Route("/demo/token", demo_token, methods=["POST"])]
