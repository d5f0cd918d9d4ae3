"""Run the benchmarks against `ssehub serve`, and optionally Nchan and the naive baseline side by side.

    ./scripts/bench [options]                 (sets up .venv, then runs this module)
    .venv/bin/python -m benchmarks.run --systems ssehub,nchan,naive --sweep \\
        --json docs/benchmarks.json --markdown bench.md --plots docs

Every scenario (benchmarks/scenarios.py) is run by the Go load generator (benchmarks/ssebench)
against each system in turn; the systems take turns within a scenario, so their figures come
from the same minutes of a shared machine. The load average is recorded before each run. The
report is a Markdown table of figures, one of checks (every delivery accounted for) and, with
--sweep, the fan-out and chat series; --json keeps every raw figure, --plots draws the PNGs of
docs/benchmarks.md from them (the `bench` extra: matplotlib).

The exit status is 1 when a run of ssehub lost, repeated or reordered an event, or failed (what
the other systems lose is reported too); a scenario a server cannot run (streamed ingest where it
has none) is reported as such, not as a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import generator, report
from .scenarios import NAMES, SIZES, SWEEPS, Scenario
from .systems import NCHAN_MODULE, ROOT, AgentsApp, Naive, Nchan, ServerFailed, SSEHub, System, tree_rss_kb

__all__ = ["main"]

SYSTEMS = ("ssehub", "nchan", "naive")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def raise_file_limit() -> int:
    """Raise the open-files limit as far as allowed (children inherit it); returns the soft limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for limit in (max(hard, 65536), hard):  # root may raise the hard limit too
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ensure_tools(nchan: bool) -> None:
    """Install Go (and nginx with Nchan) with scripts/bench-deps when they are missing."""
    if shutil.which("go") is None or (nchan and not NCHAN_MODULE.exists()):
        deps = subprocess.run([str(ROOT / "scripts" / "bench-deps"), *(["nchan"] if nchan else [])])
        if deps.returncode != 0:
            raise SystemExit(deps.returncode)  # bench-deps said what is missing


class Stores:
    """A store of its own for each server of the run; removed afterwards."""

    def __init__(self, kind: str, workdir: Path, tag: str) -> None:
        self.kind, self.workdir, self.tag = kind, workdir, tag
        self.made: list[str] = []

    def url(self, name: str) -> str:
        if self.kind == "memory":
            return "memory://"
        if self.kind == "sqlite":
            url = f"sqlite:///{self.workdir / f'{self.tag}-{name}.db'}"
        else:
            base = "redis://127.0.0.1:6379/0" if self.kind == "redis" else self.kind
            url = f"{base}{'&' if '?' in base else '?'}prefix=ssehub-bench-{self.tag}-{name}:"
        self.made.append(url)
        return url

    def remove(self) -> None:
        for url in self.made:
            if url.startswith("sqlite:///"):
                for suffix in ("", "-wal", "-shm"):
                    Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
            else:
                import redis

                base, _, prefix = url.partition("?prefix=")
                # Our own keys only: the Redis may be shared, never FLUSHDB it.
                with redis.Redis.from_url(base) as client:
                    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                    for i in range(0, len(keys), 1000):
                        client.delete(*keys[i : i + 1000])


class Bench:
    """One benchmark run: the built generator, the servers, and the records of every measurement."""

    def __init__(self, exe: Path, stores: Stores, workers: int, workdir: Path, tag: str) -> None:
        self.exe, self.stores, self.workers, self.workdir, self.tag = exe, stores, workers, workdir, tag
        self.records: list[dict[str, Any]] = []
        self._done: dict[tuple[str, Scenario], dict[str, Any]] = {}
        self._topics = 0

    def _topic(self, scenario: Scenario) -> str:
        # Word characters only (Nchan's channel ids); the "_" after the number keeps each run's name
        # from being the prefix of a later one's.
        self._topics += 1
        name = f"{scenario.name}_{self.tag}_{self._topics}_"
        return name + "{t}" if scenario.topics > 1 else name

    def measure(self, group: str, scenario: Scenario, system: System) -> dict[str, Any]:
        """Run `scenario` against `system` (or reuse an identical run of this benchmark) and record it."""
        same = scenario
        if scenario.name == "chatstream" and not isinstance(system, SSEHub):
            same = dataclasses.replace(scenario, name="chat")  # one POST per token: the chat scenario
        earlier = self._done.get((system.name, same))
        load = os.getloadavg()
        if earlier is not None:
            result, load, note = earlier["result"], earlier["load"], earlier.get("note")
            note = f"the run of {earlier['group']} {earlier['scenario']}" + (f"; {note}" if note else "")
        else:
            say(f"{group}: {scenario.name} ({scenario.size}) on {system.name}, load {load[0]:.2f}")
            result, note = self._run(scenario, system)
            say(f"  -> {json.dumps(result)}")
        # Racing POSTs from several publishers land in any order; one writer per topic (a run, a stream)
        # must keep its order.
        ordered = scenario.publishers == 1 or scenario.name == "agents" or same.name == "chatstream"
        record = {
            "group": group,
            "scenario": scenario.name,
            "size": scenario.size,
            "params": dataclasses.asdict(scenario),
            "system": system.name,
            "load": list(load),
            "ordered": ordered,
            "result": result,
            **({"note": note} if note else {}),
        }
        self.records.append(record)
        self._done.setdefault((system.name, same), record)
        return record

    def _run(self, scenario: Scenario, system: System) -> tuple[dict[str, Any], str | None]:
        args = scenario.args()
        timeout = scenario.timeout + scenario.hold + 120 + scenario.subscribers / 50
        topic = self._topic(scenario)
        if scenario.name == "agents":
            if not isinstance(system, SSEHub):
                return {"na": "agent runs are ssehub's own"}, None
            return self._agents(scenario, args, timeout), None
        if scenario.name == "replay" and not system.replays:
            return {"na": "it keeps no events to replay"}, None
        note = None
        if scenario.name == "chatstream":
            reason = system.streaming_ingest()
            if reason is None:
                args.append("-stream")
            elif isinstance(system, SSEHub):
                return {"unsupported": reason}, None
            else:
                note = reason
        args = ["-sub", system.sub(topic, oldest=scenario.name == "replay"), "-pub", system.pub(topic), *args]
        if scenario.name == "idle":
            before, n = tree_rss_kb(system.pid), scenario.subscribers

            def during() -> dict[str, Any]:
                rss = tree_rss_kb(system.pid)
                return {"rss_before_kb": before, "rss_during_kb": rss, "bytes_per_conn": (rss - before) * 1024 / n}

            holding = generator.hold_for(min(2.0, scenario.hold / 2), during)
            return generator.run(self.exe, args, timeout, while_holding=holding), note
        result = generator.run(self.exe, args, timeout)
        if isinstance(system, SSEHub) and "error" not in result:
            # The hub's own count, against what the generator published.
            result["stored"] = system.stored(topic.removesuffix("{t}"))
            result["published"] = scenario.events
        return result, note

    def _agents(self, scenario: Scenario, args: list[str], timeout: float) -> dict[str, Any]:
        app = AgentsApp(free_port(), self.workdir, self.stores.url("agents"), self.workers)
        try:
            app.start()
        except ServerFailed as exc:
            return {"error": str(exc)}
        try:
            gate = f"agents_gate_{self.tag}_{self._topics}"
            args = [
                "-agent", app.agent_url, "-agentbody", json.dumps({"gate": gate}),
                "-sub", app.run_events(), "-pub", app.pub(gate), *args,
            ]  # fmt: skip
            result = generator.run(self.exe, args, timeout)
            if "error" not in result:
                # Each run's topic holds its tokens and its terminal event.
                app.runs_ended()
                result["stored"] = app.stored("runs/")
                result["published"] = scenario.events + scenario.topics
            return result
        finally:
            app.stop()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024

    def version(*cmd: str) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else ""

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "go": version("go", "version"),
        "nginx": version("nginx", "-v") if shutil.which("nginx") else "",
        "files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "uptime": version("uptime"),
    }


@contextlib.contextmanager
def running(systems: list[System]) -> Iterator[None]:
    try:
        for system in systems:
            system.start()
        yield
    finally:
        for system in systems:
            system.stop()


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--systems", default="ssehub", help="comma-separated: ssehub, nchan, naive (default ssehub)")
    p.add_argument("--scenarios", default=",".join(NAMES), help=f"comma-separated (default all: {','.join(NAMES)})")
    p.add_argument("--size", choices=sorted(SIZES), default="full", help="full (default) or smoke: seconds, for CI")
    p.add_argument(
        "--sweep", action="store_true", help="also sweep fan-out over subscribers and chat over topics (if chosen)"
    )
    p.add_argument("--store", default="sqlite", help="memory, sqlite (default), redis or redis://host:port/db")
    p.add_argument("--workers", type=int, default=1, help="ssehub serve --workers (above 1 needs redis)")
    p.add_argument("--json", type=Path, default=None, help="write the raw figures here (default .venv/bench/)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    p.add_argument("--plots", type=Path, default=None, help="draw the PNG plots into this folder (needs matplotlib)")
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for kind, given, known in (("system", args.systems, SYSTEMS), ("scenario", args.scenarios, NAMES)):
        unknown = [g for g in given if g not in known]
        if unknown or not given:
            p.error(f"unknown {kind} {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}")
    if args.store not in ("memory", "sqlite", "redis") and not args.store.startswith("redis://"):
        p.error(f"--store is memory, sqlite, redis or redis://host:port/db, not {args.store!r}")
    if "ssehub" not in args.systems:
        p.error("--systems must include ssehub: the other systems are what it is compared with")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.plots is not None:
        from . import plots  # fail now, not after the measurements, if matplotlib is missing

        plots.check()
    workdir = ROOT / ".venv" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    files = raise_file_limit()
    ensure_tools(nchan="nchan" in args.systems)
    try:
        exe = generator.build(workdir)
    except (generator.GoMissing, subprocess.CalledProcessError) as exc:
        say(f"error: {exc}")
        return 2
    tag = f"{datetime.datetime.now():%H%M%S}_{os.getpid()}"
    stores = Stores(args.store, workdir, tag)
    systems: list[System] = [SSEHub(free_port(), workdir, stores.url("serve"), args.workers)]
    if "nchan" in args.systems:
        systems.append(Nchan(free_port(), workdir))
    if "naive" in args.systems:
        systems.append(Naive(free_port(), workdir))
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": args.size,
        "store": args.store,
        "workers": args.workers,
        "systems": [s.name for s in systems],
        "machine": machine(),
    }
    chosen = [s for s in SIZES[args.size] if s.name in args.scenarios]
    if args.sweep:
        chosen += [p for name, ps in SWEEPS[args.size].items() if name in args.scenarios for p in ps]
    need = max(s.subscribers for s in chosen)
    if files < need + 200:
        say(f"warning: the open-files limit is {files}; {need:,} subscribers need more (ulimit -n)")
    bench = Bench(exe, stores, args.workers, workdir, tag)
    try:
        with running(systems):
            for scenario in SIZES[args.size]:
                if scenario.name in args.scenarios:
                    for system in systems:
                        bench.measure("main", scenario, system)
            if args.sweep:
                for name, points in SWEEPS[args.size].items():
                    for point in points if name in args.scenarios else []:
                        for system in systems:
                            bench.measure(f"{name} sweep", point, system)
    except ServerFailed as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("interrupted: every server stopped, nothing written")
        return 130
    finally:
        stores.remove()
    doc = {"meta": meta, "records": bench.records}
    text = report.markdown(doc)
    print(text, end="")
    out = args.json or workdir / f"results-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    say(f"raw figures: {out}")
    if args.markdown is not None:
        args.markdown.write_text(text)
    if args.plots is not None:
        for path in plots.draw(doc, args.plots):
            say(f"plot: {path}")
    # What the others lose is reported, but it is ssehub that is under test.
    return 1 if report.problems(doc, "ssehub") else 0


if __name__ == "__main__":
    sys.exit(main())
