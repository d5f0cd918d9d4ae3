"""The official Durable Streams conformance suite against a real `ssehub serve`: SQLite, and Redis with two
processes. The bar is every test the suite runs by default; the failing names are printed when it is missed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from durable_harness import SUITE_TESTS, failures, require_harness, run_suite
from support import ServerProcess, redis_prefix

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LONG_POLL_MS = 1000  # the server's long-poll timeout, below what the suite allows (its value + 1 s)
# The suite checks what browsers see, CORS preflights included: a hub serves browsers of other origins
# only when told which (`--cors-origin`; `*` for any, never with cookies).
SERVE_OPTIONS = ("--long-poll-timeout", str(LONG_POLL_MS / 1000), "--cors-origin", "*")


def check(summary: dict[str, object], store: str) -> None:
    lines = failures(summary)  # type: ignore[arg-type]
    assert summary["total"] == SUITE_TESTS, f"the suite ran {summary['total']} tests, not {SUITE_TESTS}"
    assert summary["passed"] == SUITE_TESTS, f"{store}: {summary['passed']}/{SUITE_TESTS}, failing:\n" + "\n".join(
        lines
    )


def test_suite_on_sqlite(server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    require_harness()
    proc = server("--store", f"sqlite:///{tmp_path / 'ds.db'}", *SERVE_OPTIONS)
    check(run_suite(proc.url, tmp_path / "summary.json", LONG_POLL_MS), "sqlite")


@pytest.mark.redis
def test_suite_on_redis_with_two_processes(
    server: Callable[..., ServerProcess], tmp_path: Path, redis_url: str
) -> None:
    require_harness()
    with redis_prefix(redis_url) as prefix:
        proc = server(
            "--store",
            f"{redis_url}?prefix={prefix}",
            "--workers",
            "2",
            *SERVE_OPTIONS,
        )
        check(run_suite(proc.url, tmp_path / "summary.json", LONG_POLL_MS), "redis, 2 processes")
