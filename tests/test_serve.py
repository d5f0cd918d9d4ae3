"""`ssehub serve` refuses bad options with one line and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    (["--store", "foo://x"], {}, "unknown store scheme 'foo'"),
    (["--store", "sqlite:////proc/nope/x.db"], {}, "cannot open SQLite database"),
    (["--heartbeat", "0"], {}, "heartbeat and purge_interval must be positive"),
    (["--port", "70000"], {}, "port 70000 is out of range"),
    (["--port", "abc"], {}, "argument --port: invalid int value: 'abc'"),
    ([], {"SSEHUB_PORT": "abc"}, "argument --port: invalid int value: 'abc'"),
    ([], {"SSEHUB_TTL": "soon"}, "argument --ttl: invalid float value: 'soon'"),
    (["--store", "memory://", "--workers", "2"], {}, "--workers 2 needs a store that processes can share"),
]


@pytest.mark.parametrize(("args", "env", "message"), CASES)
def test_bad_options_get_one_line(tmp_path: Path, args: list[str], env: dict[str, str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", *args],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode in (1, 2)
    assert "Traceback" not in done.stderr
    assert message in done.stderr.strip().splitlines()[-1]
