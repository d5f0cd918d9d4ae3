"""A stopping hub lets its running agent runs finish within `run_grace` seconds, then cancels what is left."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ssehub import Hub, HubConfig, Run


async def test_runs_finish_within_the_grace_and_the_rest_fail(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = Hub(store, HubConfig(run_grace=1.0))
    started = asyncio.Event()

    @hub.agent("quick")
    async def quick(run: Run, body: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(0.2)
        await run.text("finished")
        return {"answer": "finished"}

    @hub.agent("slow")
    async def slow(run: Run, body: dict[str, Any]) -> None:
        await asyncio.sleep(3600)

    async with hub:
        done = await hub.runs.start_run("quick", {})
        stuck = await hub.runs.start_run("slow", {})
        await started.wait()
    async with Hub(store) as again:
        assert (await again.runs.info(done.id)).status == "completed"
        info = await again.runs.info(stuck.id)
        assert info.status == "failed"
        assert info.meta["error"] == "the server stopped before the run finished"


def test_run_grace_is_bounded() -> None:
    for bad in (-1.0, 3601.0):
        try:
            HubConfig(run_grace=bad)
        except ValueError as exc:
            assert "run_grace" in str(exc)
        else:
            raise AssertionError(f"run_grace={bad} was accepted")


def test_serve_refuses_a_bad_run_grace_in_one_line() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", "--run-grace", "-1"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["ssehub serve: --run-grace: must be a number from 0 to 3600, got '-1'"]
