"""The README's code blocks run: every block runs here, or is marked `<!-- fragment: why -->` just above it.

- Python blocks that build an app are executed, served, and used (the first one's `build()` publishes; the
  agents one answers `POST /agents/summarise`); the client block runs as a script against a real server.
- Shell blocks run in bash against a real server (`ssehub serve --demo`, or the agents example for the
  blocks that call it), with `localhost:8000` pointed at that server's port and the `ssehub` command on PATH.
- The JavaScript block runs in Chromium as a module on a page of a real `ssehub serve --demo`.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import ROOT, ServerProcess, serve_app
from test_browser import browser, context  # noqa: F401 - the Chromium fixtures

Start = Callable[..., ServerProcess]
BLOCK = re.compile(r"(?:<!-- fragment: (?P<why>[^>]*?) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)


def blocks() -> list[tuple[str, str, str | None]]:
    return [(m["lang"], m["code"], m["why"]) for m in BLOCK.finditer((ROOT / "README.md").read_text())]


def runnable(lang: str, contains: str = "") -> list[str]:
    return [code for language, code, why in blocks() if language == lang and why is None and contains in code]


def local(code: str, url: str) -> str:
    return code.replace("http://127.0.0.1:8000", url).replace("localhost:8000", url)


def test_every_block_is_run_here_or_marked_as_a_fragment() -> None:
    found = blocks()
    assert {lang for lang, _, _ in found} <= {"python", "bash", "js"}
    fragments = [why for _, _, why in found if why is not None]
    assert all(fragments) and len(fragments) == 2  # the set-up commands, the two-machine Redis example
    # Each runnable block is taken by one of the tests below.
    taken = len(runnable("python")) + len(runnable("bash")) + len(runnable("js"))
    assert taken == len(found) - len(fragments) == 8
    first_screen = (ROOT / "README.md").read_text().split("## How it works")[0]
    assert "./scripts/serve" in first_screen and "./scripts/test" in first_screen and "--port" in first_screen


def bash(code: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "SSEHUB_URL": url}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", local(code, url)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_first_example_serves_and_publishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # its SQLite file lands here
    code = runnable("python", "async def build")[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    async with serve_app(namespace["app"]) as url, httpx.AsyncClient(base_url=url) as c:
        await namespace["build"]("42")
        page = (await c.get("/topics/build-42/events?after=0", headers={"accept": "application/json"})).json()
        assert [(e["event"], e["data"]) for e in page["events"]] == [("log", '{"line":"compiling"}')]
        assert page["status"] == "completed"


async def test_the_agents_example_and_its_curl_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = runnable("python", "@hub.agent")[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    async with serve_app(namespace["app"]) as url:
        done = await asyncio.to_thread(bash, runnable("bash", "/agents/summarise")[0], url, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "event: done" in done.stdout and "HTTP/1.1 202" in done.stdout
    waited = done.stdout.splitlines()[-1]  # the last call waits for the result as JSON
    assert '"status":"completed"' in waited and '"result":{"answer":"Short and sweet."}' in waited, waited


@pytest.mark.parametrize("which", ["topics/build-42/events", "ssehub publish"])
def test_the_shell_blocks_against_a_real_server(which: str, server: Start, tmp_path: Path) -> None:
    srv = server("--store", "memory://", "--demo", env={"SSEHUB_DEMO_DELAY": "0"})
    (code,) = [c for c in runnable("bash", which) if "/agents/summarise" not in c]
    done = bash(code, srv.url, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    if which == "ssehub publish":
        assert "deleted build-42" in done.stdout
        assert re.search(r"^\d+ done \{", done.stdout, re.M), done.stdout  # the run streamed to its end
    else:
        assert done.stdout.startswith('{"ids":[1]}') and "data: compiling" in done.stdout


def test_the_token_block_against_a_hub_with_access_control(
    server: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "a-secret-for-the-readme-token-block-0123456789"
    srv = server("--store", "memory://", "--demo", "--jwt-secret", secret, env={"SSEHUB_DEMO_DELAY": "0"})
    monkeypatch.setenv("SSEHUB_JWT_SECRET", secret)
    (code,) = runnable("bash", "ssehub token")
    done = bash(code, srv.url, tmp_path)
    assert done.returncode == 0 and "event: done" in done.stdout, done.stdout + done.stderr
    assert httpx.post(f"{srv.url}/agents/chat", json={"message": "hi"}, timeout=10).status_code == 401


def test_the_python_client_block(server: Start, tmp_path: Path) -> None:
    srv = server("--store", "memory://")
    script = tmp_path / "client.py"
    script.write_text(local(runnable("python", "AsyncClient")[0], srv.url))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "1 log {'line': 'compiling'}\n"), done.stderr


async def test_the_js_block_in_chromium(server: Start, context: Any) -> None:  # noqa: F811
    # The block closes its subscription when the run ends: the run takes a few seconds, as a real answer
    # does, so that the subscription (a second connection) opens before it.
    srv = server("--store", "memory://", "--demo", env={"SSEHUB_DEMO_DELAY": "0.03"})
    async with httpx.AsyncClient() as c:
        published = await c.post(
            f"{srv.url}/topics/build-42/events", json={"event": "log", "data": {"line": "compiling"}}
        )
        assert published.status_code == 200
    page = await context.new_page()
    logs: list[str] = []
    page.on("console", lambda message: logs.append(message.text))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", lambda r: logs.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    await page.goto(f"{srv.url}/healthz")
    await page.set_content('<div id="output"></div><button id="stop">Stop</button>')
    await page.add_script_tag(content=runnable("js")[0], type="module")
    await page.wait_for_function("document.querySelector('#output').textContent.includes('ssehub demo agent')")
    await page.wait_for_function("document.querySelector('#stop').onclick !== null")
    # The subscription is a second connection, independent of the stream: it may open a little later.
    for _ in range(200):
        if "compiling" in logs and "open" in logs:
            break
        await asyncio.sleep(0.05)
    assert "compiling" in logs and "open" in logs, logs
    assert errors == []
