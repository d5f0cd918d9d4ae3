"""What the hub serves to browsers: the ssehub.js client always, the demo page only with --demo."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from support import ServerProcess


def test_client_and_page_are_served(server: Callable[..., ServerProcess]) -> None:
    plain = server("--store", "memory://")
    js = httpx.get(f"{plain.url}/_ssehub/ssehub.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "export function subscribe" in js.text and "export function stream" in js.text
    assert "export async function cancel" in js.text
    missing = httpx.get(f"{plain.url}/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{plain.url}/_ssehub/nope.js").status_code == 404

    demo = server("--store", "memory://", "--demo")
    page = httpx.get(f"{demo.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/_ssehub/demo/demo.js", "/_ssehub/demo/demo.css"):
        assert asset in page.text
        assert httpx.get(f"{demo.url}{asset}").status_code == 200
    assert f"demo chat: open {demo.url}/ in a browser" in demo.output()
