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

from support import ROOT, ServerProcess

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


async def test_stream_and_cancel_report_the_hubs_errors(server: Callable[..., ServerProcess], context: Any) -> None:
    hub = server("--store", "memory://", "--demo")
    page = await open_harness(context, hub.url)
    errors = await page.evaluate(
        """async () => {
          const { stream, cancel, SSEHubError } = await import("/_ssehub/ssehub.js");
          const caught = async (promise) => {
            try { await promise; return null; } catch (e) { return [e instanceof SSEHubError, e.status, e.code]; }
          };
          return [
            await caught(stream("/agents/no-such-agent", { message: "hi" }).done),
            await caught(stream("/agents/chat", "not json").done),
            await caught(cancel("no-such-run")),
          ];
        }"""
    )
    assert errors == [[True, 404, "not_found"], [True, 400, "invalid_input"], [True, 404, "not_found"]]
    await screenshot(page, "stream-errors")


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


# -- the demo chat page of `ssehub serve --demo` --------------------------------------------------------------

# Records every text the answer showed, so a test can check it grew token by token and never went back.
WATCH_ANSWER = """() => {
  window.seen = [];
  const watch = () => {
    const answer = document.querySelector('.turn:last-child .answer');
    const text = answer ? answer.textContent : '';
    if (text !== (seen.at(-1) ?? '')) seen.push(text);
  };
  new MutationObserver(watch).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


def start_demo(server: Callable[..., ServerProcess], tmp_path: Path, delay: str = "0.02") -> ServerProcess:
    return server(
        "--demo", "--store", f"sqlite:///{tmp_path / 'hub.db'}", "--retry", "300", env={"SSEHUB_DEMO_DELAY": delay}
    )


async def ask(page: Any, message: str) -> None:
    await page.fill("#input", message)
    await page.press("#input", "Enter")  # the keyboard sends


async def answer_text(page: Any, turn: int = 1) -> str:
    text: str = await page.text_content(f".turn:nth-child({turn}) .answer") or ""
    return text


async def run_of(page: Any, turn: int = 1) -> dict[str, Any]:
    await page.wait_for_selector(f".turn:nth-child({turn})[data-run-id]")
    run_id = await page.get_attribute(f".turn:nth-child({turn})", "data-run-id")
    async with httpx.AsyncClient(timeout=10) as client:
        run: dict[str, Any] = (await client.get(f"{page.url.split('/?')[0]}/runs/{run_id}")).json()
    return run


async def wait_status(page: Any, status: str, turn: int = 1, timeout: float = 60) -> None:
    await page.wait_for_selector(f".turn:nth-child({turn})[data-status={status}]", timeout=timeout * 1000)


async def wait_text(page: Any, chars: int, turn: int = 1) -> None:
    await page.wait_for_function(
        f"(document.querySelector('.turn:nth-child({turn}) .answer')?.textContent.length ?? 0) > {chars}"
    )


async def test_demo_streams_tokens_progressively_and_ends_with_the_result(
    server: Callable[..., ServerProcess], context: Any, tmp_path: Path
) -> None:
    hub = start_demo(server, tmp_path)
    page = await context.new_page()
    await page.goto(f"{hub.url}/")
    assert "session=" in page.url  # the conversation lives in the URL
    await page.evaluate(WATCH_ANSWER)
    await ask(page, "How does resuming work?")
    await wait_text(page, 30)
    await screenshot(page, "demo-streaming")
    await wait_status(page, "completed")
    run = await run_of(page)
    assert run["status"] == "completed"
    final = await answer_text(page)
    assert final == run["result"]["answer"] and len(final) > 100
    seen: list[str] = await page.evaluate("seen")
    assert len(seen) >= 5, "the answer appeared at once, not token by token"
    assert all(final.startswith(text) for text in seen), "the answer changed other than by growing"
    assert await page.is_visible("#send") and not await page.is_visible("#stop")
    await screenshot(page, "demo-completed")


async def test_demo_reload_mid_answer_resumes_without_repeats_or_gaps(
    server: Callable[..., ServerProcess], context: Any, tmp_path: Path
) -> None:
    hub = start_demo(server, tmp_path, delay="0.05")
    page = await context.new_page()
    await page.goto(f"{hub.url}/")
    await ask(page, "Tell me a story")
    await wait_text(page, 40)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/runs/" in r.url and "/events" in r.url else None)
    await page.reload()
    await wait_text(page, 0)
    await screenshot(page, "demo-after-reload")
    await wait_status(page, "completed")
    run = await run_of(page)
    assert await answer_text(page) == run["result"]["answer"]
    # It resumed from where it was (the id kept in sessionStorage), not from the start.
    resumed = [int(url.rsplit("after=", 1)[1]) for url in requests if "after=" in url]
    assert resumed and resumed[0] > 0, requests
    await screenshot(page, "demo-reload-completed")


async def test_demo_second_tab_on_the_same_url_follows_the_answer_live(
    server: Callable[..., ServerProcess], context: Any, tmp_path: Path
) -> None:
    hub = start_demo(server, tmp_path, delay="0.04")
    first = await context.new_page()
    await first.goto(f"{hub.url}/")
    await ask(first, "Hello from tab one")
    await wait_text(first, 20)
    second = await context.new_page()
    await second.goto(first.url)
    await wait_text(second, 20)
    # Live: the second tab shows text while the run is still going.
    assert await second.get_attribute(".turn:nth-child(1)", "data-status") == "running"
    assert await second.text_content(".turn:nth-child(1) .user-msg") == "Hello from tab one"
    await screenshot(second, "demo-second-tab-live")
    await wait_status(first, "completed")
    await wait_status(second, "completed")
    run = await run_of(first)
    assert await answer_text(first) == await answer_text(second) == run["result"]["answer"]
    await screenshot(second, "demo-second-tab-completed")


async def test_demo_stop_cancels_the_run(server: Callable[..., ServerProcess], context: Any, tmp_path: Path) -> None:
    hub = start_demo(server, tmp_path, delay="0.1")
    page = await context.new_page()
    await page.goto(f"{hub.url}/")
    await ask(page, "Write a long essay")
    await wait_text(page, 10)
    assert await page.is_visible("#stop")
    await page.click("#stop")
    await wait_status(page, "cancelled", timeout=15)
    run = await run_of(page)
    assert run["status"] == "cancelled"
    assert "cancelled" in (await page.text_content(".turn:nth-child(1) .status") or "")
    assert not await page.is_visible(".turn:nth-child(1) .typing")
    assert await page.is_visible("#send")
    # What was shown is a prefix of nothing more: the stream ended, so no text arrives after the cancel.
    shown = await answer_text(page)
    await page.wait_for_timeout(300)
    assert await answer_text(page) == shown
    await screenshot(page, "demo-stopped")


async def logged_text(base: str, run_id: str) -> str:
    """Every text_delta of a run as its log holds them: what a page must show, once each, in order."""
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(
            f"{base}/topics/runs/{run_id}/events",
            params={"after": 0, "limit": 1000},
            headers={"accept": "application/json"},
        )
    return "".join(json.loads(e["data"])["content"] for e in page.json()["events"] if e["event"] == "text_delta")


async def test_demo_completes_the_answer_through_a_server_restart(
    server: Callable[..., ServerProcess], context: Any, tmp_path: Path
) -> None:
    # SIGTERM drains the streams at once, lets the run finish (--run-grace) into the SQLite log, and the
    # restarted server serves the page the rest of it.
    hub = start_demo(server, tmp_path, delay="0.03")
    page = await context.new_page()
    await page.goto(f"{hub.url}/")
    # Remember how much of the answer was there when the page first said it was reconnecting.
    await page.evaluate(
        """() => new MutationObserver(() => {
          if (document.querySelector('#banner').hidden || window.shownAtDrop !== undefined) return;
          window.shownAtDrop = document.querySelector('.turn:nth-child(1) .answer')?.textContent.length ?? 0;
        }).observe(document.querySelector('#banner'), { attributes: true })"""
    )
    await ask(page, "Keep going through a restart")
    await wait_text(page, 30)
    assert await page.get_attribute(".turn:nth-child(1)", "data-status") == "running"
    hub.restart()
    await wait_status(page, "completed")
    run = await run_of(page)
    shown = await answer_text(page)
    assert shown == run["result"]["answer"] == await logged_text(hub.url, run["id"])
    shown_at_drop = await page.evaluate("window.shownAtDrop")
    assert shown_at_drop is not None, "the page never said it was reconnecting"
    assert 30 < shown_at_drop < len(shown), "the connection did not drop mid-answer"
    # The banner goes once the stream is back, which may be a jittered retry after the answer completed.
    await page.wait_for_selector("#banner", state="hidden", timeout=15_000)
    # And the restarted server serves the next question too.
    await ask(page, "Are you back?")
    await wait_status(page, "completed", turn=2)
    assert await answer_text(page, turn=2) == (await run_of(page, turn=2))["result"]["answer"]
    await screenshot(page, "demo-after-restart")


async def test_demo_at_phone_width_with_the_keyboard(
    server: Callable[..., ServerProcess], browser: Any, tmp_path: Path
) -> None:
    hub = start_demo(server, tmp_path, delay="0.03")
    ctx = await browser.new_context(viewport={"width": 390, "height": 800}, color_scheme="dark", is_mobile=True)
    try:
        page = await ctx.new_page()
        await page.goto(f"{hub.url}/")
        assert await page.evaluate("document.activeElement.id") == "input"  # ready to type
        await page.keyboard.type("Hi from a phone")
        await page.keyboard.press("Enter")
        await wait_status(page, "completed")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
        assert await page.evaluate("document.querySelector('#input').value") == ""
        await screenshot(page, "demo-phone-dark")
        # Esc stops a running answer.
        await page.keyboard.type("And another")
        await page.keyboard.press("Enter")
        await wait_text(page, 5, turn=2)
        await page.keyboard.press("Escape")
        await wait_status(page, "cancelled", turn=2, timeout=15)
    finally:
        await ctx.close()


async def test_demo_reconnects_at_once_when_the_server_is_back_and_regenerates(
    server: Callable[..., ServerProcess], context: Any, tmp_path: Path
) -> None:
    # The hub asks clients to wait 30 s before they reconnect, and EventSource would: the page finds the
    # restarted hub by itself (a health check every second while it is away) and reconnects at once, so
    # the answer completes and the banner goes long before the hint's 30 s.
    hub = server(
        "--demo", "--store", f"sqlite:///{tmp_path / 'hub.db'}", "--retry", "30000", env={"SSEHUB_DEMO_DELAY": "0.03"}
    )
    page = await context.new_page()
    await page.goto(f"{hub.url}/")
    await ask(page, "Keep going through a restart")
    await wait_text(page, 30)
    hub.restart()
    await wait_status(page, "completed", timeout=20)
    await page.wait_for_selector("#banner", state="hidden", timeout=20_000)
    run = await run_of(page)
    assert await answer_text(page) == run["result"]["answer"]

    # Regenerate asks the same question again, as a new turn; only the last ended turn offers it.
    assert await page.is_visible(".turn:nth-child(1) .regenerate")
    await page.click(".turn:nth-child(1) .regenerate")
    await wait_text(page, 5, turn=2)
    assert await page.is_hidden(".turn:nth-child(1) .regenerate")  # not while an answer runs
    await wait_status(page, "completed", turn=2)
    assert await page.text_content(".turn:nth-child(2) .user-msg") == "Keep going through a restart"
    assert await page.is_hidden(".turn:nth-child(1) .regenerate") and await page.is_visible(
        ".turn:nth-child(2) .regenerate"
    )
    await screenshot(page, "demo-regenerate")


async def test_demo_says_readably_when_sending_fails_and_recovers(
    server: Callable[..., ServerProcess], context: Any, tmp_path: Path
) -> None:
    hub = start_demo(server, tmp_path)
    page = await context.new_page()
    await page.goto(f"{hub.url}/")
    await page.wait_for_function("!!document.querySelector('#input')")
    hub.stop()
    await page.wait_for_selector("#banner:not([hidden])")
    assert "Reconnecting" in (await page.text_content("#banner") or "")
    await ask(page, "Anyone there?")
    await wait_status(page, "failed")
    note = await page.text_content(".turn:nth-child(1) .status") or ""
    assert note == "Could not send: the server cannot be reached. Press Regenerate to try again."
    await screenshot(page, "demo-send-failed")
    hub.start()
    await page.wait_for_selector("#banner", state="hidden", timeout=20_000)
    await page.click(".turn:nth-child(1) .regenerate")
    await wait_status(page, "completed", turn=2)
    assert await page.text_content(".turn:nth-child(2) .user-msg") == "Anyone there?"
