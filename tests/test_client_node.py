"""The browser client as an npm package (src/ssehub/static: package.json, ssehub.js, ssehub.d.ts), run in Node.

tests/node/client/ installs it by path next to pinned `eventsource` and `typescript` (scripts/node-deps runs
`npm ci` there): `node --test` drives subscribe(), stream() and cancel() against a real `ssehub serve --demo`,
and `tsc` compiles an app's use of the package against its `.d.ts`. The served file and the package's are one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable

import httpx

from support import ROOT, ServerProcess, missing

NODE_DIR = ROOT / "tests" / "node" / "client"
PACKAGE = ROOT / "src" / "ssehub" / "static"


def _need_node() -> None:
    if not shutil.which("node"):
        missing("node is not on PATH")
    for name in ("ssehub", "eventsource", "typescript"):
        if not (NODE_DIR / "node_modules" / name / "package.json").exists():
            missing(f"{name} is not installed in tests/node/client: run scripts/node-deps")


def test_the_package_in_node_against_a_real_server(server: Callable[..., ServerProcess]) -> None:
    _need_node()
    srv = server("--store", "memory://", "--demo", env={"SSEHUB_DEMO_DELAY": "0"})
    done = subprocess.run(
        ["node", "--test", "client.test.mjs"],
        cwd=NODE_DIR,
        env={**os.environ, "SSEHUB_URL": srv.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# pass 3" in done.stdout and "# fail 0" in done.stdout, done.stdout


def test_the_types_compile_against_an_apps_use_of_them() -> None:
    _need_node()
    done = subprocess.run(
        ["node", "node_modules/typescript/bin/tsc", "-p", "."], cwd=NODE_DIR, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_package_ships_the_file_the_hub_serves(server: Callable[..., ServerProcess]) -> None:
    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert manifest["exports"]["."] == {"types": "./ssehub.d.ts", "default": "./ssehub.js"}
    assert manifest["type"] == "module" and set(manifest["files"]) == {"ssehub.js", "ssehub.d.ts", "README.md"}
    srv = server("--store", "memory://")
    served = httpx.get(f"{srv.url}/_ssehub/ssehub.js")
    assert served.status_code == 200 and served.content == (PACKAGE / "ssehub.js").read_bytes()
