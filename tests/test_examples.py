"""The examples, run as a user runs them: examples/fastapi_app.py under uvicorn, the Node scripts against it.

use-chat.mjs drives the AI SDK's own chat engine (what useChat wraps) with its DefaultChatTransport;
ag-ui.mjs runs @ag-ui/client's HttpAgent. Both go once straight to the app and once through a TCP
proxy that cuts their first connections at random bytes: the resuming fetch of the examples must
then bring them exactly the message of the uncut run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import ROOT, free_port, missing
from test_client import Proxy

EXAMPLES = ROOT / "examples"
NODE_DIR = EXAMPLES / "node"
QUESTION = "How does resume work?"


@pytest.fixture
def example_app(tmp_path: Path) -> Iterator[str]:
    """The FastAPI example under uvicorn, in a process of its own; yields its URL."""
    port = free_port()
    env = {**os.environ, "EXAMPLE_STORE": f"sqlite:///{tmp_path / 'example.db'}", "EXAMPLE_DELAY": "0.02"}
    cmd = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(EXAMPLES), "--port", str(port)]
    with open(tmp_path / "app.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "app.log").read_text())
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


async def node(script: str, *args: str) -> dict[str, Any]:
    if not shutil.which("node") or not (NODE_DIR / "node_modules" / "ai" / "package.json").exists():
        missing("node or the examples' packages are missing: run scripts/node-deps")
    proc = await asyncio.create_subprocess_exec(
        "node", script, *args, cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result


def cutting_proxy(url: str, seed: int) -> Proxy:
    """A proxy to `url` that cuts the answers of its first three connections after 0.6-3 kB (past the headers)."""
    rng = random.Random(seed)
    cuts = [rng.randint(600, 3000) for _ in range(3)]
    return Proxy(int(url.rsplit(":", 1)[1]), lambda n: cuts[n] if n < len(cuts) else None)


def answer(question: str) -> str:
    words = len(question.split())
    return (
        f"Your message has {words} words. This answer is streamed word by word from an "
        "ssehub run: every word is an event in a durable log, so a reader that loses its connection "
        "resumes exactly where it was, and a reader that arrives late gets the whole answer in a few frames."
    )


async def test_use_chat_example(example_app: str) -> None:
    api = f"{example_app}/api/chat/assistant"
    uncut = await node("use-chat.mjs", api, QUESTION, "answer")
    assert uncut["status"] == "ready" and uncut["error"] is None and uncut["reconnects"] == 0
    user, reply = uncut["messages"]
    assert user["role"] == "user" and reply["role"] == "assistant"
    parts = reply["parts"]
    assert [p["type"] for p in parts] == ["reasoning", "tool-count_words", "text"]
    assert parts[1]["state"] == "output-available" and parts[1]["output"] == {"words": 4}
    assert parts[2] == {"type": "text", "text": answer(QUESTION), "state": "done"}
    assert uncut["data"] == ["data-result"]  # the run's result, as a transient data part (onData)

    proxy = cutting_proxy(example_app, 7)
    async with proxy.running():
        cut = await node("use-chat.mjs", f"{proxy.url}/api/chat/assistant", QUESTION, "answer")
    assert proxy.cuts >= 1 and cut["reconnects"] == proxy.cuts  # a resumed (compacted) body may be shorter than a cut
    assert cut["requests"] == ["POST 200"] + ["GET 200"] * proxy.cuts  # each resume: the rest of the run
    assert cut["status"] == "ready" and cut["messages"][1]["parts"] == parts  # every part once, none lost

    reload = await node("use-chat.mjs", api, QUESTION, "reload")
    assert reload["stopped"] and len(reload["stopped"]) < len(answer(QUESTION))  # Stop came mid-answer
    assert reload["status"] == "ready" and reload["messages"][1]["parts"] == parts  # the run went on: resumed whole
    assert reload["unchangedAfterEnd"] is True
    assert reload["requests"] == ["POST 200", "GET 200", "GET 204"]  # resumed while running; over: 204

    cancel = await node("use-chat.mjs", api, QUESTION, "cancel")
    assert cancel["cancel"]["http"] == 202 and cancel["cancel"]["status"] == "cancelled"
    assert cancel["stopped"] != answer(QUESTION) and cancel["afterCancel"] == 1
    assert cancel["requests"] == ["POST 200", "GET 204"]  # a cancelled run is over: nothing to resume
    async with httpx.AsyncClient(base_url=f"{example_app}/api") as c:
        run = (await c.get(f"/runs/{cancel['cancel']['id']}")).json()
    assert run["status"] == "cancelled" and run["agent"] == "assistant"


async def test_ag_ui_example(example_app: str) -> None:
    url = f"{example_app}/api/ag-ui/assistant"
    uncut = await node("ag-ui.mjs", url, QUESTION)
    assert uncut["outcome"] == "success" and uncut["reconnects"] == 0
    assert uncut["result"] == {"answer": answer(QUESTION)}
    roles = [(m["role"], m.get("content")) for m in uncut["messages"]]
    assert roles[0] == ("user", QUESTION) and roles[-1] == ("assistant", answer(QUESTION))
    assert [r for r, _ in roles] == ["user", "reasoning", "assistant", "tool", "assistant"]
    assert uncut["events"][0] == "RUN_STARTED" and uncut["events"][-1] == "RUN_FINISHED"

    proxy = cutting_proxy(example_app, 11)
    async with proxy.running():
        cut = await node("ag-ui.mjs", f"{proxy.url}/api/ag-ui/assistant", QUESTION)
    assert proxy.cuts >= 1 and cut["reconnects"] == proxy.cuts  # a resumed (compacted) body may be shorter than a cut
    assert cut["outcome"] == "success" and cut["result"] == uncut["result"]
    assert [(m["role"], m.get("content")) for m in cut["messages"]] == roles  # HttpAgent verified the order too
