"""The benchmarks, run at a tiny size: every scenario against a real `ssehub serve`, built and driven
by the real Go load generator. Nothing here is timed; what is checked is that the runner works end to
end, produces its report and plots, and that every event reached every reader once (and in order,
where one writer feeds a topic).

Needs Go (scripts/bench-deps installs it); with CI=true a missing Go fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import FIGURES
from benchmarks.scenarios import NAMES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def go() -> None:
    if shutil.which("go") is None:
        message = "the benchmarks need Go: scripts/bench-deps installs golang-go"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


def bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--size", "smoke", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def expected_deliveries(params: dict[str, Any]) -> int:
    # Each event goes to the readers of its topic: subscribers / topics of them.
    return params["events"] * (params["subscribers"] // params["topics"])


def check_deliveries(record: dict[str, Any]) -> None:
    result, where = record["result"], f"{record['group']}/{record['scenario']}/{record['system']}"
    assert "error" not in result, where
    for count in ("lost", "dup", "sub_errors", "publish_failed"):
        assert result.get(count, 0) == 0, (where, count, result)
    assert result["delivered"] == expected_deliveries(record["params"]), (where, result)
    # The hub agrees: it holds what the generator published (agents: each run's tokens and its end).
    assert result["stored"] == result["published"], (where, result)
    if record["ordered"]:
        assert result["reordered"] == 0, (where, result)


@pytest.mark.timeout(150)
def test_every_scenario_runs_and_loses_nothing(tmp_path: Path) -> None:
    proc, doc = bench(tmp_path, "--sweep", "--markdown", str(tmp_path / "report.md"), "--plots", str(tmp_path))
    records = doc["records"]
    assert {r["scenario"] for r in records if r["group"] == "main"} == set(NAMES)
    assert {r["group"] for r in records} == {"main", "fanout sweep", "chat sweep"}
    for record in records:
        assert record["system"] == "ssehub"
        result = record["result"]
        if record["scenario"] == "idle":
            assert result["errors"] == 0 and result["subscribers"] == record["params"]["subscribers"]
            assert result["rss_during_kb"] > 0
        elif record["scenario"] == "chatstream" and "unsupported" in result:
            # Today's ssehub has no streaming ingest: the runner says so instead of failing.
            assert "application/x-ndjson" in result["unsupported"]
        else:
            check_deliveries(record)
    agents = next(r for r in records if r["scenario"] == "agents")
    assert agents["ordered"] and agents["result"]["delivered"] == 10 * 8 * 2

    # The report: one row per figure, the sweeps, the checks; and the same text in --markdown.
    report = proc.stdout
    assert report == (tmp_path / "report.md").read_text()
    assert "| figure | ssehub |" in report
    for _, _, label, _ in FIGURES:
        assert f"| {label} |" in report
    assert "| subscribers | ssehub deliveries/s | ssehub p99 ms |" in report
    assert "| topics | ssehub publishes/s | ssehub p99 ms |" in report
    assert "Every delivery accounted for" in report and "PROBLEM" not in report
    for name in ("bench-fanout.png", "bench-chat.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.timeout(120)
def test_redis_with_two_workers_loses_nothing(tmp_path: Path, redis_url: str) -> None:
    # Agent runs and their readers on different worker processes, the run's gate published on any.
    _, doc = bench(tmp_path, "--store", redis_url, "--workers", "2", "--scenarios", "chat,agents")
    assert [r["scenario"] for r in doc["records"]] == ["chat", "agents"]
    assert doc["meta"]["workers"] == 2
    for record in doc["records"]:
        check_deliveries(record)


def test_unknown_options_are_a_one_line_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--systems", "ssehub,mercure"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "unknown system mercure; choose from ssehub, nchan, naive" in proc.stderr
