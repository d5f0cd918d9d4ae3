"""The ai-sdk and ag-ui streams judged by the real packages: `ai` 7, `@ag-ui/core` and `@ag-ui/client` 1.

tests/node/formats/ holds the pinned packages (scripts/node-deps runs `npm ci` there) and
two checkers that read streams the way the packages' own clients do (see their headers).
For every recorded run (tests/agent_logs.py), in each format, the checkers get the stream
whole, compacted, cut at random bytes and resumed from the last id the reader had (once or
several times, each connection compacted or not), with a reset in it, and joined midway;
every chunk must pass the package's schema (and AG-UI's order verifier), and every reader
must assemble exactly the message of the uncut one.

Without Node or the packages these tests skip, except with CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from typing import Any

import pytest

from agent_logs import Log, agent_logs
from ssehub import formats, sse
from ssehub.demo import answer_for
from ssehub.formats import Cursor
from support import ROOT
from support import missing as missing_what

NODE_DIR = ROOT / "tests" / "node" / "formats"
PACKAGES = ("ai", "@ag-ui/core", "@ag-ui/client", "rxjs")
LOG_NAMES = ("demo", "thinker", "failing", "cancelled", "plain")
CHECKERS = {"ai-sdk": "check-ai-sdk.mjs", "ag-ui": "check-ag-ui.mjs"}


def _need_node() -> None:
    missing = [p for p in PACKAGES if not (NODE_DIR / "node_modules" / p / "package.json").exists()]
    if shutil.which("node") and not missing:
        return
    missing_what(
        "node is not on PATH"
        if not shutil.which("node")
        else f"{', '.join(missing)} not installed: run scripts/node-deps"
    )


def check(name: str, cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run the checker of format `name` over `cases`; its results by case name."""
    _need_node()
    done = subprocess.run(
        ["node", CHECKERS[name]],
        input=json.dumps({"cases": cases}).encode(),
        cwd=NODE_DIR,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    results = json.loads(done.stdout)["results"]
    assert [r["name"] for r in results] == [c["name"] for c in cases]
    return {r["name"]: r for r in results}


def stream(name: str, lg: Log, *, after: str = "", compact: bool = False) -> bytes:
    enc = formats.create(name, run_id=lg.run_id, after=Cursor.parse(after) if after else 0)
    return enc.encode(lg.events, compact=compact) + enc.close(lg.status)


def case(name: str, lg: Log, connections: list[bytes]) -> dict[str, Any]:
    return {
        "name": name,
        "connections": [c.decode() for c in connections],
        "threadId": lg.run_id,
        "runId": lg.run_id,
    }


def cut_and_resumed(name: str, lg: Log, rng: random.Random) -> list[bytes]:
    """What one reader receives over 2-4 connections, each cut at a random byte, resumed with Last-Event-ID."""
    connections = []
    decoder = sse.Decoder()
    rest = stream(name, lg, compact=rng.random() < 0.5)
    for _ in range(rng.randint(1, 3)):
        received = rest[: rng.randint(0, len(rest))]
        connections.append(received)
        decoder.feed(received)
        decoder.close()
        rest = stream(name, lg, after=decoder.last_event_id, compact=rng.random() < 0.5)
    return [*connections, rest]


def with_reset(name: str, lg: Log, at: int, gone: int) -> bytes:
    """The stream of a reader at event `at` when retention had dropped the `gone` events after it."""
    enc = formats.create(name, run_id=lg.run_id)
    first = at + gone + 1
    return (
        enc.encode(lg.events[:at])
        + enc.reset(first, at)
        + enc.encode(e for e in lg.events if e.id >= first)
        + enc.close(lg.status)
    )


def joined(name: str, lg: Log, at: int) -> bytes:
    """A reader that joins at event `at` with no history: the opening frames of what is open, then the rest."""
    enc = formats.create(name, run_id=lg.run_id, after=at)
    enc.encode(lg.events[:at])
    return enc.join() + enc.encode(lg.events[at:]) + enc.close(lg.status)


def assembled(result: dict[str, Any]) -> Any:
    """What a reader ends with: the AI SDK's message, or AG-UI's messages and run outcome."""
    if "message" in result:
        return result["message"], result["errors"]
    return result["messages"], result["result"], result["outcome"], result["runError"]


@pytest.fixture(scope="module")
def logs() -> dict[str, Log]:
    return agent_logs()


@pytest.mark.parametrize("name", CHECKERS)
def test_resumed_and_compacted_readers_assemble_the_uncut_message(name: str, logs: dict[str, Log]) -> None:
    rng = random.Random(name)
    cases: list[dict[str, Any]] = []
    for log_name in LOG_NAMES:
        lg = logs[log_name]
        cases.append(case(f"{log_name}/whole", lg, [stream(name, lg)]))
        cases.append(case(f"{log_name}/compacted", lg, [stream(name, lg, compact=True)]))
        cases += [case(f"{log_name}/cut-{i}", lg, cut_and_resumed(name, lg, rng)) for i in range(12)]
    results = check(name, cases)
    for c in cases:
        result = results[c["name"]]
        assert result["problems"] == [], c["name"]
        whole = results[c["name"].split("/")[0] + "/whole"]
        assert assembled(result) == assembled(whole), c["name"]
    compacted, whole = results["demo/compacted"], results["demo/whole"]
    count = "chunks" if name == "ai-sdk" else "events"
    assert compacted[count] * 4 < whole[count]  # 111 events: a few frames, not one per token


def test_ai_sdk_messages(logs: dict[str, Log]) -> None:
    results = check("ai-sdk", [case(n, logs[n], [stream("ai-sdk", logs[n])]) for n in LOG_NAMES])
    demo = results["demo"]["message"]
    assert demo["id"] == logs["demo"].run_id and demo["role"] == "assistant"
    kinds = [p["type"] for p in demo["parts"]]
    assert kinds == ["step-start", "data-progress", "tool-search", "text"]
    tool, progress, answer = demo["parts"][2], demo["parts"][1], demo["parts"][3]
    assert tool["state"] == "output-available" and tool["input"] == {"query": "What about chat?"}
    assert progress["data"] == {"percent": 100, "message": "Done"}  # one part, updated in place
    assert answer == {"type": "text", "text": answer_for("What about chat?"), "state": "done"}

    thinker = [(p["type"], p.get("state")) for p in results["thinker"]["message"]["parts"]]
    assert thinker == [
        ("step-start", None),
        ("reasoning", "done"),
        ("tool-get_weather", "output-available"),  # the model's call and the agent's run of it: one part
        ("tool-get_time", "output-available"),
        ("data-progress", None),
        ("data-message", None),
        ("data-citation", None),
        ("text", "done"),
    ]
    failing = results["failing"]
    assert failing["errors"] == ["the source is down"]
    assert [p["type"] for p in failing["message"]["parts"]] == ["text", "step-start", "tool-download"]
    assert failing["message"]["parts"][2]["errorText"] == "the source is down"
    cancelled = results["cancelled"]["message"]["parts"]
    assert cancelled[-1] == {"type": "text", "text": "A long answer that ", "state": "done"}
    plain = [p["type"] for p in results["plain"]["message"]["parts"]]
    assert plain == [
        "step-start",
        "data-message",
        "text",
        "data-progress",
        "data-text_delta",
        "tool-lookup",
        "text",
    ]


def test_ag_ui_runs(logs: dict[str, Log]) -> None:
    results = check("ag-ui", [case(n, logs[n], [stream("ag-ui", logs[n])]) for n in LOG_NAMES])
    demo = results["demo"]
    answer = answer_for("What about chat?")
    assert demo["outcome"] == "success" and demo["result"] == {"answer": answer}
    assert [m["role"] for m in demo["messages"]] == ["assistant", "tool", "assistant"]
    assert demo["messages"][0]["toolCalls"][0]["function"] == {
        "name": "search",
        "arguments": '{"query":"What about chat?"}',
    }
    assert demo["messages"][2]["content"] == answer
    thinker = results["thinker"]
    assert [m["role"] for m in thinker["messages"]] == ["reasoning", "assistant", "tool", "tool", "assistant"]
    assert [c["function"]["name"] for c in thinker["messages"][1]["toolCalls"]] == ["get_weather", "get_time"]
    assert results["failing"]["runError"] == "the source is down" and results["failing"]["outcome"] is None
    assert results["cancelled"]["outcome"] == "cancelled"
    assert results["plain"]["outcome"] == "success"


@pytest.mark.parametrize("name", CHECKERS)
def test_resets_and_joins_are_valid_streams(name: str, logs: dict[str, Log]) -> None:
    rng = random.Random(f"join-{name}")
    cases: list[dict[str, Any]] = []
    for log_name in LOG_NAMES:
        lg = logs[log_name]
        n = len(lg.events)
        for i in range(4):
            at = rng.randint(0, n - 1)
            cases.append(case(f"{log_name}/reset-{i}", lg, [with_reset(name, lg, at, rng.randint(1, n - at))]))
            cases.append(case(f"{log_name}/join-{i}", lg, [joined(name, lg, rng.randint(0, n))]))
    results = check(name, cases)
    for c in cases:
        assert results[c["name"]]["problems"] == [], c["name"]
    demo = logs["demo"]
    late = check(name, [case("late", demo, [joined(name, demo, len(demo.events) - 5)])])["late"]
    if name == "ai-sdk":
        text = next(p["text"] for p in reversed(late["message"]["parts"]) if p["type"] == "text")
    else:
        text = late["messages"][-1]["content"]
    tail = "".join(json.loads(e.data)["content"] for e in demo.events[-5:] if e.event == "text_delta")
    assert text == tail  # what was written after the join, in the part that was open when it joined
