"""ssehub.js and the demo page in a real Chromium against a hub with access control on.

Tokens are short-lived on purpose (two or three seconds), so each answer outlives several of them:
the streams are cut with `auth_expired` mid-answer, and the page must resume with fresh tokens and
show every token of the answer once, in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ssehub.access import mint_token
from support import ServerProcess
from test_browser import ask, browser, context, open_harness, screenshot, wait_status, wait_text  # noqa: F401

pytestmark = pytest.mark.browser

KEY = "ops-key-0123456789abcdef"
SECRET = "the-jwt-secret-of-the-browser-tests-0123456789"
ADMIN = {"authorization": f"Bearer {KEY}"}


def start_hub(server: Callable[..., ServerProcess], tmp_path: Path, delay: str, ttl: str) -> ServerProcess:
    return server(
        "--demo",
        "--store",
        f"sqlite:///{tmp_path / 'hub.db'}",
        "--api-key",
        f"ops={KEY}",
        "--jwt-secret",
        SECRET,
        "--token-ttl",
        ttl,
        "--heartbeat",
        "0.5",
        "--retry",
        "300",
        env={"SSEHUB_DEMO_DELAY": delay},
    )


async def run_doc(base: str, run_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        doc: dict[str, Any] = (await client.get(f"{base}/runs/{run_id}", headers=ADMIN)).json()
    return doc


async def logged_text(base: str, run_id: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(
            f"{base}/topics/runs/{run_id}/events",
            params={"after": 0, "limit": 1000},
            headers={"accept": "application/json", **ADMIN},
        )
    return "".join(json.loads(e["data"])["content"] for e in page.json()["events"] if e["event"] == "text_delta")


async def run_id_of(page: Any, turn: int = 1) -> str:
    await page.wait_for_selector(f".turn:nth-child({turn})[data-run-id]")
    run_id: str = await page.get_attribute(f".turn:nth-child({turn})", "data-run-id")
    return run_id


async def test_demo_with_access_control_outlives_its_tokens_and_keeps_runs_to_their_browser(
    server: Callable[..., ServerProcess],
    browser: Any,  # noqa: F811 - the fixture of test_browser.py
    tmp_path: Path,
) -> None:
    hub = start_hub(server, tmp_path, delay="0.04", ttl="3")
    first = await browser.new_context(viewport={"width": 1100, "height": 800})
    second = await browser.new_context(viewport={"width": 1100, "height": 800})
    try:
        page = await first.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/demo/token") else None)
        expired: list[str] = []
        page.on("console", lambda m: expired.append(m.text) if "auth_expired" in m.text else None)
        await page.goto(f"{hub.url}/")
        await ask(page, "Tell me everything, slowly")
        await wait_text(page, 20)
        await screenshot(page, "demo-auth-streaming")
        await wait_status(page, "completed")
        run = await run_id_of(page)
        shown = await page.text_content(".turn:nth-child(1) .answer")
        # Nothing lost, nothing repeated, although the answer took longer than two tokens lived.
        assert shown == (await run_doc(hub.url, run))["result"]["answer"] == await logged_text(hub.url, run)
        assert len(asked) >= 2, "the page never asked for a fresh token"

        # A second tab of the same browser follows the next answer live, and a reload resumes it.
        await ask(page, "And again")
        await wait_text(page, 20, turn=2)
        tab = await first.new_page()
        await tab.goto(page.url)
        await wait_text(tab, 20, turn=2)
        await tab.reload()
        await wait_status(tab, "completed", turn=2)
        await wait_status(page, "completed", turn=2)
        run2 = await run_id_of(page, 2)
        assert await tab.text_content(".turn:nth-child(2) .answer") == await logged_text(hub.url, run2)

        # Another browser, even on the same URL, sees none of it and can neither read nor stop its runs.
        await ask(page, "A third, long one")
        await wait_text(page, 10, turn=3)
        run3 = await run_id_of(page, 3)
        other = await second.new_page()
        await other.goto(page.url)
        await other.wait_for_timeout(500)
        assert await other.locator(".turn").count() == 0
        refused = await other.evaluate(
            """async (run) => {
              const { token } = await (await fetch("/demo/token", { method: "POST" })).json();
              const auth = { Authorization: `Bearer ${token}` };
              const answers = await Promise.all([
                fetch(`/runs/${run}/events`, { headers: { ...auth, Accept: "text/event-stream" } }),
                fetch(`/runs/${run}`, { headers: auth }),
                fetch(`/topics/runs/${run}/events?after=0`, { headers: { ...auth, Accept: "application/json" } }),
                fetch(`/runs/${run}/cancel`, { method: "POST", headers: auth }),
              ]);
              return answers.map((r) => r.status);
            }""",
            run3,
        )
        assert refused == [403, 403, 403, 403]
        await screenshot(other, "demo-auth-other-browser")
        assert (await run_doc(hub.url, run3))["status"] == "running"

        # Its own browser stops it.
        await page.click("#stop")
        await wait_status(page, "cancelled", turn=3, timeout=15)
        assert (await run_doc(hub.url, run3))["status"] == "cancelled"
        await screenshot(page, "demo-auth-stopped")
    finally:
        await first.close()
        await second.close()


def fresh_tokens(
    page_calls: list[float], ttl: float, subject: str | None = None, **rights: list[str]
) -> Callable[[Any], str]:
    def fresh(refused: Any) -> str:
        page_calls.append(time.monotonic())
        return mint_token(SECRET, ttl=ttl, subject=subject, **rights)

    return fresh


async def test_ssehub_js_subscribe_resumes_with_a_fresh_token(
    server: Callable[..., ServerProcess],
    context: Any,  # noqa: F811 - the fixture of test_browser.py
    tmp_path: Path,
) -> None:
    hub = start_hub(server, tmp_path, delay="0.01", ttl="2")
    page = await open_harness(context, hub.url)
    calls: list[float] = []
    await page.expose_function("freshToken", fresh_tokens(calls, 2, subscribe=["ticks"]))
    await page.evaluate(
        """async () => {
          const m = await import("/_ssehub/ssehub.js");
          window.got = [];
          window.states = [];
          window.sub = m.subscribe("/topics/ticks/events", {
            tick: (d, e) => got.push([e.id, d]), done: (d, e) => got.push([e.id, "done"]),
            onState: (s) => states.push(s),
          }, { after: 0, token: (refused) => window.freshToken(refused) });
        }"""
    )
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(50):
            await client.post(f"{hub.url}/topics/ticks/events", json={"event": "tick", "data": n}, headers=ADMIN)
            await page.wait_for_timeout(120)
        await client.post(f"{hub.url}/topics/ticks/events", json={"event": "done", "data": {}}, headers=ADMIN)
    await page.wait_for_function("states.at(-1) === 'closed'", timeout=30_000)
    got = await page.evaluate("got")
    assert got == [[n + 1, n] for n in range(50)] + [[51, "done"]]
    assert len(calls) >= 2, calls  # cut by auth_expired, resumed with a fresh token
    assert "reconnecting" in await page.evaluate("states")
    await screenshot(page, "ssehub-js-token-refresh")


async def test_ssehub_js_stream_hands_over_the_run_token_and_cancels_with_it(
    server: Callable[..., ServerProcess],
    context: Any,  # noqa: F811 - the fixture of test_browser.py
    tmp_path: Path,
) -> None:
    hub = start_hub(server, tmp_path, delay="0.03", ttl="2")
    page = await open_harness(context, hub.url)
    calls: list[float] = []
    # The caller's token may start the agent, and read the runs it starts (their subject is its own). The
    # answer outlives each token: the POST's stream is cut when the caller's expires, resumed with the run's
    # own token, cut again when that one expires, and resumed with a fresh token of the caller's.
    await page.expose_function("freshToken", fresh_tokens(calls, 2, subject="alice", agents=["chat"]))
    result = await page.evaluate(
        """async () => {
          const m = await import("/_ssehub/ssehub.js");
          let text = "", start = null;
          const run = m.stream("/agents/chat", { message: "a long one" }, {
            text_delta: (d) => { text += d.content; },
            onStart: (s) => { start = s; },
          }, { token: (refused) => window.freshToken(refused) });
          const ended = await run.done;
          // A second run, stopped with its own token.
          let second = null;
          const other = m.stream("/agents/chat", { message: "stop me" }, { onStart: (s) => { second = s; } },
                                 { token: (refused) => window.freshToken(refused) });
          while (!second) await new Promise((r) => setTimeout(r, 20));
          const cancelled = await m.cancel(second.runId, { token: second.runToken });
          let refused = null;
          try { await m.cancel(start.runId, { token: second.runToken }); } catch (e) { refused = e.status; }
          await other.done;
          const hasToken = Boolean(start.runToken);
          return { text, runId: start.runId, hasToken, ended: ended?.event, cancelled, refused };
        }"""
    )
    assert result["ended"] == "done" and result["hasToken"]
    assert result["text"] == await logged_text(hub.url, result["runId"])
    assert result["cancelled"]["status"] == "cancelled"
    assert result["refused"] == 403  # one run's token cannot touch another run
    await screenshot(page, "ssehub-js-run-token")
