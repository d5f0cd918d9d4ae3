"""Forks: sharing the source's history (what ssehub does) against copying it, on each store.

    .venv/bin/python benchmarks/durable_forks.py [--store memory:// --store sqlite:///tmp/f.db --store redis://...]

For a source of N events (100 bytes each) it times, median of 5:
  shared   pin the source and create the fork topic with its ids starting after N (two store calls)
  copy     what copying would cost at the least: the N events appended to a new topic in batches of 1,000
  read     reading the whole fork from the start (stitched: source then fork) against reading the source
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from ssehub import NewEvent, open_store

META = {"durable": {"content_type": "text/plain"}}


async def measure(url: str, n: int) -> dict[str, float]:
    store = open_store(url, max_events=max(200_000, n * 2))
    await store.start()
    try:
        source = f"fork-src-{uuid.uuid4().hex[:8]}"
        events = [NewEvent("message", "x" * 100) for _ in range(n)]
        await store.create_stream(source, META, events[:1000], closed=False, deadline=None)
        for i in range(1000, n, 1000):
            await store.append_stream(source, events[i : i + 1000])
        shared, copy, read_fork, read_source = [], [], [], []
        for _ in range(5):
            fork = f"fork-{uuid.uuid4().hex[:8]}"
            t = time.perf_counter()
            await store.pin_source(source, fork)
            await store.create_stream(fork, META, [], closed=False, deadline=None, base=n, forked_from=source)
            shared.append(time.perf_counter() - t)
            t = time.perf_counter()
            page_after = 0
            while True:  # stitched read: the fork's ids up to n come from the source
                page = await store.read(source, page_after, 1000)
                assert page is not None
                if not page.events or page.events[-1].id >= n:
                    break
                page_after = page.events[-1].id
            await store.read(fork, n, 1000)
            read_fork.append(time.perf_counter() - t)
            t = time.perf_counter()
            page_after = 0
            while True:
                page = await store.read(source, page_after, 1000)
                assert page is not None
                if not page.events or page.events[-1].id >= n:
                    break
                page_after = page.events[-1].id
            read_source.append(time.perf_counter() - t)
            copied = f"copy-{uuid.uuid4().hex[:8]}"
            t = time.perf_counter()
            await store.create_stream(copied, META, events[:1000], closed=False, deadline=None)
            for i in range(1000, n, 1000):
                await store.append_stream(copied, events[i : i + 1000])
            copy.append(time.perf_counter() - t)
            await store.delete_stream(copied)
            await store.delete_stream(fork)
        await store.delete_stream(source)
        return {
            "shared_ms": statistics.median(shared) * 1000,
            "copy_ms": statistics.median(copy) * 1000,
            "read_fork_ms": statistics.median(read_fork) * 1000,
            "read_source_ms": statistics.median(read_source) * 1000,
        }
    finally:
        await store.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", action="append", default=[])
    parser.add_argument("--events", type=int, action="append", default=[])
    args = parser.parse_args()
    stores = args.store or [
        "memory://",
        "sqlite:///durable-forks-bench.db",
        "redis://127.0.0.1:6379/0?prefix=bench-forks:",
    ]
    print("| store | source events | fork, shared (ms) | fork, copied (ms) | read fork / source (ms) |")
    print("|---|---|---|---|---|")
    for url in stores:
        for n in args.events or [1_000, 10_000, 100_000]:
            r = await measure(url, n)
            print(
                f"| {url.split('?')[0]} | {n:,} | {r['shared_ms']:.1f} | {r['copy_ms']:.0f} "
                f"| {r['read_fork_ms']:.0f} / {r['read_source_ms']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
