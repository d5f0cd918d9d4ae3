"""What the hub serves to browsers: the `ssehub.js` client, and the demo chat page of `ssehub serve --demo`.

    GET /_ssehub/ssehub.js       the browser client (one dependency-free ES module), always
    GET /_ssehub/demo/...        the demo page's stylesheet and script
    GET /                        the demo chat page, only with `--demo`

The files live in the package (`ssehub/static`): a wheel carries them, and there is no build step.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "client_routes", "demo_routes"]

# In the package, beside this folder, so that a wheel carries them.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def client_routes() -> list[BaseRoute]:
    """`/_ssehub/...`: the browser client and the demo's assets (harmless without `--demo`)."""
    return [Mount("/_ssehub", app=StaticFiles(directory=STATIC_DIR), name="ssehub-static")]


async def _demo_page(request: Request) -> Response:
    # no-cache: the page is tiny, and a stale copy after an upgrade would load a mismatched script.
    return FileResponse(STATIC_DIR / "demo" / "index.html", headers={"cache-control": "no-cache"})


def demo_routes() -> list[BaseRoute]:
    """`/`: the demo chat page; `ssehub serve --demo` adds it next to the demo agent."""
    return [Route("/", _demo_page, methods=["GET", "HEAD"])]
