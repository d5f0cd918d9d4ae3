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
    (["--heartbeat", "0"], {}, "--heartbeat: must be a number above 0, got '0'"),
    (["--port", "70000"], {}, "--port: must be an integer from 0 to 65535, got '70000'"),
    (["--port", "abc"], {}, "--port: must be an integer from 0 to 65535, got 'abc'"),
    ([], {"SSEHUB_PORT": "abc"}, "SSEHUB_PORT: must be an integer from 0 to 65535, got 'abc'"),
    ([], {"SSEHUB_TTL": "soon"}, "SSEHUB_TTL: must be a number of at least 0, got 'soon'"),
    ([], {"SSEHUB_DEMO": "maybe"}, "SSEHUB_DEMO: must be true or false, got 'maybe'"),
    (["--log-level", "loud"], {}, "--log-level: must be one of critical, error, warning, info, debug, got 'loud'"),
    (["--config", "missing.toml"], {}, "missing.toml: cannot read the configuration file"),
    ([], {"SSEHUB_CONFIG": "bad.toml"}, "bad.toml: unknown option 'prot'"),
    (["--store", "memory://", "--workers", "2"], {}, "--workers 2 needs a store that processes can share"),
]


@pytest.mark.parametrize(("args", "env", "message"), CASES)
def test_bad_options_get_one_line(tmp_path: Path, args: list[str], env: dict[str, str], message: str) -> None:
    (tmp_path / "bad.toml").write_text("prot = 8000\n")
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
