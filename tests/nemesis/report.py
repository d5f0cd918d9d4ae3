"""The report of a run: a table for people, and the same figures (and every violation) as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checker import Verdict
from .history import History

__all__ = ["report_json", "table", "write_report"]

SHOWN = 5  # violations listed per kind in the table; the JSON has them all


def _count(mapping: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in mapping.items()) or "none"


def table(history: History, verdict: Verdict) -> str:
    f = verdict.figures
    delivered = f.get("delivered", {})
    rows: list[tuple[str, str]] = [
        ("store", f"{history.store}, {len({s.process for s in history.samples})} hub(s)"),
        ("seed / duration", f"{history.seed} / {history.duration:.0f}s ({history.date})"),
        ("faults injected", _count(f.get("faults", {}))),
        (
            "events",
            f"published {f.get('published', 0):,}, acknowledged {f.get('acknowledged', 0):,}, "
            f"unacknowledged {f.get('unacknowledged', 0):,} (present {f.get('unacknowledged_present', 0):,}, "
            f"absent {f.get('unacknowledged_absent', 0):,})",
        ),
        ("delivered", f"{sum(delivered.values()):,} ({_count(delivered)}) to readers {_count(f.get('readers', {}))}"),
        (
            "lost / twice / reordered",
            f"acknowledged lost {f.get('lost', 0)}, stored twice {f.get('stored_twice', 0)}, "
            f"deliveries missed {f.get('missed', 0)}, duplicated {f.get('duplicated', 0)}, "
            f"reordered {f.get('reordered', 0)}",
        ),
        ("resets", _resets(f.get("resets", []))),
        (
            "5xx seen by clients",
            f"{_count({str(k): v for k, v in f.get('answers_5xx', {}).items()})}; 503 while the store was away "
            f"{f.get('expected_503', 0)}, while a hub drained {f.get('draining_503', 0)}, "
            f"later {f.get('late_503', 0)} (worst {f.get('worst_late_503', 0):.1f}s late)",
        ),
        (
            "worst reconnect",
            ", ".join(f"{c} {w['seconds']:.2f}s ({w['reader']})" for c, w in f.get("worst_reconnect", {}).items())
            or "none",
        ),
        ("runs", _count(f.get("runs", {}))),
    ]
    for process, p in f.get("processes", {}).items():
        rows.append(
            (
                f"{process} memory / fds",
                f"RSS {p['rss_mb'][0]} -> {p['rss_mb'][1]} MB (peak {p['peak_rss_mb']}), "
                f"fds {p['fds'][0]} -> {p['fds'][1]} (peak {p['peak_fds']}), {p['incarnations']} process(es)",
            )
        )
    rows.append(("violations", _count(f.get("violations", {})) if verdict.violations else "none: the promise held"))
    width = max(len(name) for name, _ in rows)
    lines = [f"nemesis: {history.store}, seed {history.seed}"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    by_kind: dict[str, int] = {}
    for v in verdict.violations:
        by_kind[v.kind] = by_kind.get(v.kind, 0) + 1
        if by_kind[v.kind] <= SHOWN:
            lines.append(f"  ! {v}")
        elif by_kind[v.kind] == SHOWN + 1:
            lines.append(f"  ! {v.kind}: ... (the JSON report lists them all)")
    return "\n".join(lines)


def _resets(resets: list[dict[str, Any]]) -> str:
    if not resets:
        return "none"
    shown = ", ".join(
        f"{r['reader']} {r['from']}->{r['to']} at {r['t']:.1f}s{' (new log)' if r.get('new_log') else ''}"
        for r in resets[:6]
    )
    return f"{len(resets)}: {shown}" + (", ..." if len(resets) > 6 else "")


def report_json(history: History, verdict: Verdict) -> dict[str, Any]:
    return {
        "store": history.store,
        "seed": history.seed,
        "duration": history.duration,
        "date": history.date,
        "command": history.command,
        "ok": verdict.ok,
        "figures": verdict.figures,
        "violations": [{"kind": v.kind, "subject": v.subject, "detail": v.detail} for v in verdict.violations],
        "faults": [
            {"kind": x.kind, "target": x.target, "start": x.start, "end": x.end, "detail": x.detail}
            for x in history.faults
        ],
        "outages": [{"cause": o.cause, "start": o.start, "end": o.end} for o in history.outages],
    }


def write_report(path: Path, history: History, verdict: Verdict) -> None:
    path.write_text(json.dumps(report_json(history, verdict), indent=2) + "\n")
