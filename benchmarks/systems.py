"""The servers under test, each started as its own process group and stopped after the run.

- `SSEHub`: `ssehub serve` (any store, any number of workers).
- `AgentsApp`: the same server with the benchmark agent registered (benchmarks/agents_app.py).
- `Nchan`: nginx with the Nchan module (C), messages in memory, one worker.
- `Naive`: a 30-line sse-starlette broadcast of asyncio queues (benchmarks/naive_baseline.py).

Every system answers `POST <pub>` with a text/plain body (the event's data) and `GET <sub>`
with text/event-stream; `pub` and `sub` are URL templates where the load generator puts the
topic number in place of `{t}`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, TextIO

import httpx

__all__ = ["NCHAN_MODULE", "AgentsApp", "Naive", "Nchan", "SSEHub", "ServerFailed", "System", "tree_rss_kb"]

ROOT = Path(__file__).resolve().parent.parent
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")


class ServerFailed(RuntimeError):
    """A server that would not start."""


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants (uvicorn's workers, nginx's), in KiB."""
    total = 0
    pending = [pid]
    while pending:
        p = pending.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return total


class System:
    """A server under test."""

    name: ClassVar[str]
    #: Whether the server offers replay from the oldest stored event.
    replays: ClassVar[bool] = True

    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"
        self._log: TextIO | None = None

    def pub(self, topic: str) -> str:
        raise NotImplementedError

    def sub(self, topic: str, *, oldest: bool = False) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def health_url(self) -> str:
        return self.base + "/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30) -> None:
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.proc.returncode}: {self.output()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health_url, timeout=1).status_code < 500:
                    return
            time.sleep(0.1)
        self.stop()
        raise ServerFailed(f"{self.name} did not answer at {self.health_url} within {timeout:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The whole group: uvicorn's and nginx's worker processes too.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def streaming_ingest(self) -> str | None:
        """None if the server takes a topic's events over one streaming NDJSON POST, else why not."""
        return "no streaming ingest: one POST per token"


class SSEHub(System):
    name = "ssehub"

    def __init__(self, port: int, workdir: Path, store: str, workers: int) -> None:
        super().__init__(port, workdir)
        self.store, self.workers = store, workers

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "ssehub", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--store", self.store, "--workers", str(self.workers), "--log-level", "warning",
            # The sweep's 10,000 subscribers and its publishers are above one process's default caps (10,000
            # connections, 10,000 subscriptions), which would answer the publishers 503.
            "--max-connections", "0", "--max-subscribers", "0",
        ]  # fmt: skip

    @property
    def health_url(self) -> str:
        return self.base + "/healthz"

    def pub(self, topic: str) -> str:
        return f"{self.base}/topics/{topic}/events"

    def sub(self, topic: str, *, oldest: bool = False) -> str:
        return f"{self.base}/topics/{topic}/events" + ("?after=0" if oldest else "")

    def topics(self, prefix: str) -> list[dict[str, Any]]:
        """The topics whose names start with `prefix`, as GET /topics lists them."""
        found: list[dict[str, Any]] = []
        with httpx.Client(base_url=self.base, timeout=30) as client:
            after = ""
            while True:
                page = client.get("/topics", params={"prefix": prefix, "after": after, "limit": 1000}).json()
                found += page["topics"]
                if page["next_after"] is None:
                    return found
                after = page["next_after"]

    def stored(self, prefix: str) -> int:
        """How many events the hub holds in the topics whose names start with `prefix`."""
        return sum(int(t["last_id"]) for t in self.topics(prefix))

    def streaming_ingest(self) -> str | None:
        # One line, as the load generator would send it, to a topic of its own.
        body = b'{"event": "message", "data": "probe"}\n'
        try:
            response = httpx.post(
                self.pub(f"probe_ndjson_{os.getpid()}_{time.time_ns()}"),
                content=iter([body]),  # an iterator: sent chunked, as a stream
                headers={"content-type": "application/x-ndjson"},
                timeout=10,
            )
        except httpx.HTTPError as exc:
            return f"the streaming NDJSON publish failed: {exc}"
        if response.is_success:
            return None
        try:
            error = response.json()["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = response.text[:200]
        return f"POST with Content-Type application/x-ndjson answered {response.status_code} ({detail})"


class AgentsApp(SSEHub):
    """`ssehub serve` with the benchmark agent registered."""

    name = "ssehub-agents"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "benchmarks.agents_app", "--port", str(self.port),
            "--store", self.store, "--workers", str(self.workers),
        ]  # fmt: skip

    @property
    def agent_url(self) -> str:
        from .agents_app import AGENT

        return f"{self.base}/agents/{AGENT}"

    def run_events(self) -> str:
        return self.base + "/runs/{t}/events"

    def runs_ended(self, timeout: float = 30) -> bool:
        """Wait until every run has stored its end (it may follow its last token by a moment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(t["status"] != "open" for t in self.topics("runs/")):
                return True
            time.sleep(0.2)
        return False


class Nchan(System):
    name = "nchan"

    def command(self) -> list[str]:
        d = self.workdir / "nchan"
        d.mkdir(parents=True, exist_ok=True)
        # nginx takes its descriptors from the soft limit, which the runner raised.
        files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        conf = d / "nginx.conf"
        conf.write_text(
            f"""load_module {NCHAN_MODULE};
worker_processes 1; worker_rlimit_nofile {files}; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections {max(1024, files - 100)}; }}
http {{ access_log off; client_body_temp_path {d}/body; nchan_max_reserved_memory 512M;
  server {{ listen 127.0.0.1:{self.port};
    location = / {{ return 200 "ok"; }}
    location ~ /pub/(\\w+)$ {{ nchan_publisher; nchan_channel_id $1; nchan_message_buffer_length 100000;
                               nchan_message_timeout 10m; }}
    location ~ /sub/(\\w+)$ {{ nchan_subscriber eventsource; nchan_channel_id $1;
                               nchan_subscriber_first_message newest; }}
    location ~ /old/(\\w+)$ {{ nchan_subscriber eventsource; nchan_channel_id $1;
                               nchan_subscriber_first_message oldest; }}
  }}
}}
"""
        )
        return ["nginx", "-c", str(conf)]

    def pub(self, topic: str) -> str:
        return f"{self.base}/pub/{topic}"

    def sub(self, topic: str, *, oldest: bool = False) -> str:
        return f"{self.base}/{'old' if oldest else 'sub'}/{topic}"


class Naive(System):
    name = "naive"
    replays = False

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "benchmarks.naive_baseline:app", "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log",
            "--backlog", "4096",  # as ssehub serve: thousands of clients connect at once
        ]  # fmt: skip

    def pub(self, topic: str) -> str:
        return f"{self.base}/pub/{topic}"

    def sub(self, topic: str, *, oldest: bool = False) -> str:
        return f"{self.base}/sub/{topic}"
