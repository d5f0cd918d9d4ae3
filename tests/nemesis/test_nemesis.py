"""The short nemesis run: every fault kind at least once, on SQLite and on Redis, with a fixed seed.

It fails on any violation the checker finds. Its report (table and JSON), the history the
checker read and the hubs' logs are left in test-artifacts/nemesis/<store>/. For longer runs:
`scripts/nemesis --store redis --duration 1200 --seed 7`.
"""

from __future__ import annotations

import shutil

import pytest

from support import ROOT, missing

from .checker import check
from .cluster import Config
from .faults import kinds_for
from .processes import NodeReaders
from .report import table, write_report
from .run import run_nemesis

pytestmark = pytest.mark.nemesis

SEED = 18
DURATION = {"sqlite": 25.0, "redis": 45.0}  # seconds of faults; each kind once takes about that


@pytest.mark.timeout(360)
@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_nothing_lost_nothing_shown_twice_under_faults(store: str) -> None:
    if (why := NodeReaders.available()) is not None:
        missing(why)
    if store == "redis" and not shutil.which("redis-server"):
        missing("redis-server is not installed (apt-get install redis-server)")
    workdir = ROOT / "test-artifacts" / "nemesis" / store
    config = Config(store=store, seed=SEED, duration=DURATION[store], drain=15.0, workdir=workdir)
    history = await run_nemesis(config, f"pytest tests/nemesis -k {store}")
    verdict = check(history)
    history.save(workdir / "history.json")
    write_report(workdir / "report.json", history, verdict)
    report = table(history, verdict)
    print(report)

    figures = verdict.figures
    assert set(figures["faults"]) == set(kinds_for(store, config.hub_count)), "every kind of fault, at least once"
    # The run was a real one: load on every kind of client, through the faults.
    assert figures["acknowledged"] > 200, report
    assert figures["delivered"].get("python", 0) > 500 and figures["delivered"].get("node", 0) > 200, report
    assert figures["runs"].get("completed", 0) > 0, report
    assert verdict.ok, report
