"""The Node harness of tests/node/durable: where it is, and whether it can run here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HARNESS = Path(__file__).resolve().parent / "node" / "durable"
#: Tests on by default in @durable-streams/server-conformance-tests 0.3.6.
SUITE_TESTS = 332


def require_harness() -> str:
    """The node binary, once `scripts/node-deps` has installed the harness; skip (fail under CI) otherwise."""
    node = shutil.which("node")
    if node and (HARNESS / "node_modules" / "@durable-streams" / "server-conformance-tests").is_dir():
        return node
    message = "the Durable Streams harness is not installed: run scripts/node-deps (needs node and npm)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def run_suite(base_url: str, out: Path, long_poll_ms: int) -> dict[str, Any]:
    node = require_harness()
    cmd = [node, "run-conformance.mjs", base_url, "--out", str(out), "--long-poll-timeout-ms", str(long_poll_ms)]
    done = subprocess.run(cmd, cwd=HARNESS, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"the conformance runner failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def failures(summary: dict[str, Any]) -> list[str]:
    return [f"{group} > {f['name']}: {f['message']}" for group, g in summary["groups"].items() for f in g["failing"]]
