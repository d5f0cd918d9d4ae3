"""The long runs: `scripts/nemesis --store redis --duration 1200 --seed 7` (see `--help`).

Each run writes its hubs' logs, `history.json` (everything the checker reads) and `report.json`
into its own folder, prints the report's table, and exits 1 if the checker found a violation.
`--check history.json` checks a saved history again, with no processes at all.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import sys
from pathlib import Path

from support import ROOT

from .checker import check
from .cluster import Config
from .faults import KINDS
from .history import History
from .report import table, write_report
from .run import run_nemesis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/nemesis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "redis", "both"], default="both")
    parser.add_argument("--seed", type=int, default=None, help="the seed of the fault schedule (default: random)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults per store (default 60)")
    parser.add_argument("--hubs", type=int, default=0, help="hubs (default: 1 on SQLite, 2 on Redis)")
    parser.add_argument(
        "--persistence",
        choices=["always", "everysec", "none"],
        default="always",
        help="Redis: appendonly yes with appendfsync always (default) or everysec, or no persistence at all "
        "(then every Redis restart loses the data)",
    )
    parser.add_argument("--kinds", default="", help=f"comma-separated fault kinds (default: all of {', '.join(KINDS)})")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10.0, help="publish calls per second per publisher")
    parser.add_argument("--topics", type=int, default=6)
    parser.add_argument("--max-events", type=int, default=None, help="retention: events kept per topic")
    parser.add_argument("--src", type=Path, default=None, help="run the hubs from this source tree (a modified copy)")
    parser.add_argument("--no-node", action="store_true", help="without the npm eventsource subscribers")
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "nemesis", help="where runs write")
    parser.add_argument("--check", type=Path, default=None, metavar="HISTORY", help="check a saved history.json")
    args = parser.parse_args(argv)

    if args.check is not None:
        history = History.load(args.check)
        verdict = check(history)
        print(table(history, verdict))
        return 0 if verdict.ok else 1

    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(unknown)}")
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    command = "scripts/nemesis " + shlex.join(argv if argv is not None else sys.argv[1:])
    failed = False
    for store in ["sqlite", "redis"] if args.store == "both" else [args.store]:
        workdir = args.out / f"{store}-{seed}"
        config = Config(
            store=store,
            seed=seed,
            duration=args.duration,
            hubs=args.hubs,
            topics=args.topics,
            publishers=args.publishers,
            rate=args.rate,
            persistence=args.persistence,
            kinds=tuple(k for k in kinds if store == "redis" or not KINDS[k][1]),
            src=args.src,
            node=not args.no_node,
            max_events=args.max_events,
            workdir=workdir,
        )
        print(f"nemesis: {store}, seed {seed}, {args.duration:.0f}s of faults; writing to {workdir}", flush=True)
        history = asyncio.run(run_nemesis(config, command))
        verdict = check(history)
        history.save(workdir / "history.json")
        write_report(workdir / "report.json", history, verdict)
        print(table(history, verdict), flush=True)
        failed = failed or not verdict.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
