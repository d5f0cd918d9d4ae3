"""ssehub.js and the demo chat page in a real Chromium (Debian's, driven by Playwright) against real servers.

Every test saves a screenshot to test-artifacts/. Without Chromium these tests skip, except with CI=true,
where a missing browser is a failure: run scripts/browser-deps.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ROOT, ServerProcess

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _need_chromium() -> None:
    if Path(CHROMIUM).exists() and shutil.which(CHROMIUM):
        return
    message = f"Chromium is not at {CHROMIUM}: run scripts/browser-deps"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _need_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    ctx = await browser.new_context(viewport={"width": 1100, "height": 800})
    try:
        yield ctx
    finally:
        await ctx.close()


async def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def publish(base: str, topic: str, *events: tuple[str, Any]) -> list[int]:
    body = [{"event": name, "data": data} for name, data in events]
    response = httpx.post(f"{base}/topics/{topic}/events", json=body, timeout=10)
    response.raise_for_status()
    ids: list[int] = response.json()["ids"]
    return ids


# A tiny harness page: any same-origin document can import the client the hub serves.
HARNESS = """async ([url, options]) => {
  const m = await import("/_ssehub/ssehub.js");
  window.got = JSON.parse(sessionStorage.getItem("got") ?? "[]");
  window.states = [];
  const keep = (d, e) => { got.push([e.id, e.event, d]); sessionStorage.setItem("got", JSON.stringify(got)); };
  window.sub = m.subscribe(url, { tick: keep, done: keep, onState: (s) => states.push(s) }, options);
}"""


async def open_harness(context: Any, base: str) -> Any:
    page = await context.new_page()
    await page.goto(f"{base}/healthz")
    return page


async def test_subscribe_parses_named_events_and_stops_at_the_end(
    server: Callable[..., ServerProcess], context: Any
) -> None:
    hub = server("--store", "memory://")
    page = await open_harness(context, hub.url)
    await page.evaluate(HARNESS, ["/topics/lib/events", {"after": 0}])
    await page.wait_for_function("states.includes('open')")
    publish(hub.url, "lib", ("tick", {"n": 1}), ("ignored_name", "x"), ("tick", {"n": 2, "s": "ünï 🎉"}))
    publish(hub.url, "lib", ("done", {"result": {"answer": "ok"}}))
    await page.wait_for_function("states.at(-1) === 'closed'")
    got = await page.evaluate("got")
    assert got == [
        [1, "tick", {"n": 1}],
        [3, "tick", {"n": 2, "s": "ünï 🎉"}],
        [4, "done", {"result": {"answer": "ok"}}],
    ]
    assert await page.evaluate("states") == ["connecting", "open", "closed"]
    assert await page.evaluate("sub.lastEventId") == 4
    await screenshot(page, "subscribe-named-events")


async def test_subscribe_resumes_after_a_reload_from_the_id_in_session_storage(
    server: Callable[..., ServerProcess], context: Any
) -> None:
    hub = server("--store", "memory://")
    page = await open_harness(context, hub.url)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/topics/resume/events" in r.url else None)
    await page.evaluate(HARNESS, ["/topics/resume/events", {"after": 0}])
    await page.wait_for_function("states.includes('open')")
    publish(hub.url, "resume", *[("tick", {"n": n}) for n in range(1, 6)])
    await page.wait_for_function("got.length === 5")

    await page.reload()
    publish(hub.url, "resume", ("tick", {"n": 6}), ("tick", {"n": 7}))  # while no page listens
    await page.evaluate(HARNESS, ["/topics/resume/events", {}])  # no cursor given: the client uses its own
    await page.wait_for_function("states.includes('open')")
    publish(hub.url, "resume", *[("tick", {"n": n}) for n in range(8, 11)], ("done", {}))
    await page.wait_for_function("states.at(-1) === 'closed'")
    got = await page.evaluate("got")
    assert [g[0] for g in got] == list(range(1, 12))
    assert [g[2].get("n") for g in got[:10]] == list(range(1, 11))
    assert requests[-1].endswith("after=5")
    await screenshot(page, "subscribe-resume-after-reload")


async def test_subscribe_reconnects_through_a_server_restart(
    server: Callable[..., ServerProcess], context: Any, tmp_path: Path
) -> None:
    hub = server("--store", f"sqlite:///{tmp_path / 'hub.db'}", "--retry", "300")
    page = await open_harness(context, hub.url)
    await page.evaluate(HARNESS, ["/topics/restart/events", {"after": 0}])
    await page.wait_for_function("states.includes('open')")
    publish(hub.url, "restart", *[("tick", {"n": n}) for n in range(1, 4)])
    await page.wait_for_function("got.length === 3")
    hub.restart()
    publish(hub.url, "restart", *[("tick", {"n": n}) for n in range(4, 7)], ("done", {}))
    await page.wait_for_function("states.at(-1) === 'closed'")
    got = await page.evaluate("got")
    assert [g[0] for g in got] == list(range(1, 8))
    assert "reconnecting" in await page.evaluate("states")
    await screenshot(page, "subscribe-server-restart")


async def test_sse_parser_follows_the_whatwg_rules(server: Callable[..., ServerProcess], context: Any) -> None:
    hub = server("--store", "memory://")
    page = await open_harness(context, hub.url)
    # The same stream cut at every position must give the same events.
    text = 'retry: 50\r\n: c\r\nid: 7\nevent: a\ndata: x\r\ndata:y\r\rdata: {"k": 1}\n\nid\ndata\n\nevent: e\n\n'
    results = await page.evaluate(
        """async (text) => {
          const { SSEParser } = await import("/_ssehub/ssehub.js");
          const out = [];
          for (let cut = 0; cut <= text.length; cut++) {
            const p = new SSEParser();
            out.push(JSON.stringify([...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))]) + p.retry);
          }
          return out;
        }""",
        text,
    )
    expected = [
        {"id": "7", "event": "a", "data": "x\ny"},
        {"id": "7", "event": "message", "data": '{"k": 1}'},
        {"id": "", "event": "message", "data": ""},
    ]
    assert set(results) == {json.dumps(expected, separators=(",", ":"), ensure_ascii=False) + "50"}
    await screenshot(page, "sse-parser")
