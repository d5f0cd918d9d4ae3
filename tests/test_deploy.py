"""docs/deploy.md as written: its nginx configuration in front of two `ssehub serve` nodes over Redis.

A real nginx (Debian's nginx-light; `scripts/services` installs it) on loopback: a stream through it
arrives unbuffered, survives a SIGTERM of the node that serves it, and resumes on the other node with
nothing lost or repeated. The page's TOML file is checked by `ssehub serve --print-config`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support import ROOT, ServerProcess, free_port, missing, read_sse, redis_prefix

Start = Callable[..., ServerProcess]
DEPLOY = ROOT / "docs" / "deploy.md"


def block(language: str) -> str:
    found = re.search(rf"```{language}\n(.*?)```", DEPLOY.read_text(), re.S)
    assert found, f"docs/deploy.md has no {language} block"
    return found.group(1)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        missing("nginx is not installed (scripts/services installs nginx-light)")
    return found


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[int, int], str]]:
    """`nginx(port_a, port_b)` runs the page's configuration in front of those two nodes; yields its URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(port_a: int, port_b: int) -> str:
        port = free_port()
        site = block("nginx").replace("127.0.0.1:8001", f"127.0.0.1:{port_a}")
        site = site.replace("127.0.0.1:8002", f"127.0.0.1:{port_b}").replace("listen 80;", f"listen 127.0.0.1:{port};")
        conf = tmp_path / "nginx.conf"
        temp = tmp_path / "nginx-temp"
        temp.mkdir(exist_ok=True)
        conf.write_text(
            f"worker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"  access_log {tmp_path}/nginx-access.log;\n"
            + "".join(
                f"  {kind}_temp_path {temp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + site
            + "}\n"
        )
        check = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True)
        assert check.returncode == 0, check.stderr.decode()
        proc = subprocess.Popen([nginx_binary(), "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"])
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                return url
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {(tmp_path / 'nginx-error.log').read_text()}")

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGQUIT)  # graceful stop
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def serving(c: httpx.AsyncClient, nodes: list[ServerProcess]) -> ServerProcess:
    """The node that holds the stream of topic `deploy`, asked directly rather than through nginx."""
    while True:
        for node in nodes:
            alive = node.proc is not None and node.proc.poll() is None
            if alive and (await c.get(f"{node.url}/topics/deploy")).json()["subscribers"]:
                return node
        await asyncio.sleep(0.05)


async def test_a_stream_through_nginx_survives_a_node_stopping(
    server: Start, nginx: Callable[[int, int], str], redis_url: str
) -> None:
    with redis_prefix(redis_url) as prefix:
        store = f"{redis_url}?prefix={prefix}"
        nodes = [server("--store", store, "--retry", "200", "--no-access-log") for _ in range(2)]
        url = nginx(nodes[0].port, nodes[1].port)
        async with httpx.AsyncClient(timeout=10) as c:
            ready = await c.get(f"{url}/readyz")
            assert ready.json() == {"status": "ready"}
            # Unbuffered: each event arrives through nginx while the stream is still open.
            assert (await c.post(f"{url}/topics/deploy/events", json={"event": "tick", "data": 0})).status_code == 200
            first = asyncio.create_task(read_sse(c, f"{url}/topics/deploy/events?after=0", count=3))
            holder = await serving(c, nodes)
            for i in (1, 2):
                r = await c.post(f"{url}/topics/deploy/events", json={"event": "tick", "data": i})
                assert r.status_code == 200
            got = await asyncio.wait_for(first, 10)
            assert not got.ended and got.headers["content-type"].startswith("text/event-stream")
            last = got.events[-1].id

            # The node serving the stream stops: the stream ends with the hint, through nginx.
            rest = asyncio.create_task(read_sse(c, f"{url}/topics/deploy/events", headers={"last-event-id": last}))
            holder = await serving(c, nodes)
            assert holder.proc is not None
            holder.proc.send_signal(signal.SIGTERM)
            cut = await asyncio.wait_for(rest, 10)
            hint = cut.raw.rpartition(b"\nretry: ")[2]  # jittered, from the hint to twice it
            assert cut.ended and hint.endswith(b"\n\n") and 200 <= int(hint) <= 400 and cut.events == []
            await asyncio.to_thread(holder.proc.wait, 15)

            # The reconnect lands on the other node (nginx skips the stopped one) and resumes from the id.
            resumed = asyncio.create_task(
                read_sse(c, f"{url}/topics/deploy/events", headers={"last-event-id": last}, count=2)
            )
            for i in (3, 4):
                r = await c.post(f"{url}/topics/deploy/events", json={"event": "tick", "data": i})
                assert r.status_code == 200, r.text
            after = await asyncio.wait_for(resumed, 10)
            ids = [int(e.id) for e in got.events + after.events]
            assert [e.data for e in after.events] == ["3", "4"]
            assert ids == sorted(set(ids)) and ids[-1] == ids[0] + len(ids) - 1  # no gap, no repeat


def test_the_pages_toml_file_is_a_valid_configuration(tmp_path: Path) -> None:
    config = tmp_path / "ssehub.toml"
    config.write_text(block("toml"))
    done = subprocess.run(
        [sys.executable, "-m", "ssehub", "serve", "--config", str(config), "--print-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert 'log-format = "json"' in done.stdout and "run-grace = 10.0" in done.stdout
