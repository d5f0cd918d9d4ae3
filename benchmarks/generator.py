"""The load generator: the Go program in benchmarks/ssebench, built with `go build`, run once per measurement.

It prints one JSON object of figures per run (see ssebench/main.go). A run that cannot produce it
(a crash, a timeout) comes back as `{"error": ...}` rather than an exception, so one failed
measurement never ends the whole benchmark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SOURCE", "GoMissing", "build", "hold_for", "run"]

SOURCE = Path(__file__).resolve().parent / "ssebench"


class GoMissing(RuntimeError):
    """No `go` on PATH."""


def build(workdir: Path) -> Path:
    """Build the load generator into `workdir`; returns the executable."""
    go = shutil.which("go")
    if go is None:
        raise GoMissing("the load generator needs Go: scripts/bench-deps installs golang-go (Debian)")
    exe = workdir / "ssebench"
    env = {
        **os.environ,
        "GOCACHE": str(workdir / "gocache"),
        "GOPATH": str(workdir / "gopath"),
        # The generator uses the standard library only: a build must never reach for the network.
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
    }
    subprocess.run([go, "build", "-o", str(exe), "."], cwd=SOURCE, env=env, check=True)
    return exe


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                parsed: dict[str, Any] = json.loads(line)
            except ValueError:
                return None
            return parsed
    return None


def run(
    exe: Path, args: list[str], timeout: float, *, while_holding: Callable[[], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Run the generator with `args`; its figures, or `{"error": ...}`.

    With `while_holding` (the idle scenario), that function is called once every subscriber is
    connected (the generator prints READY) and its figures are added to the result.
    """
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    extra: dict[str, Any] = {}
    try:
        if while_holding is not None:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() == "READY":
                extra = while_holding()
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"the load generator did not finish within {timeout:g} s"}
    except BaseException:  # interrupted: take the generator down too
        proc.kill()
        proc.communicate()
        raise
    result = _last_json(out)
    if result is None or (proc.returncode != 0 and "error" not in result):
        tail = (err or out).strip()[-500:]
        return {"error": f"the load generator exited with {proc.returncode}: {tail}"}
    return {**result, **extra}


def hold_for(seconds: float, measure: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """A `while_holding` that lets the connections settle for `seconds`, then measures."""

    def holding() -> dict[str, Any]:
        time.sleep(seconds)
        return measure()

    return holding
