"""The Markdown report of a benchmark run: figures side by side, the checks, the sweeps.

Its input is the document `benchmarks.run` writes as JSON: `{"meta": {...}, "records": [...]}`,
one record per measurement (group, scenario, size, system, load average before it, result).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FIGURES", "cell", "figure", "markdown", "problems"]

#: The rows of the main table: (scenario, result key, label, higher is better).
FIGURES: list[tuple[str, str, str, bool]] = [
    ("fanout", "deliveries_per_s", "fan-out deliveries/s", True),
    ("fanout", "lat_p99_ms", "fan-out p99 ms", False),
    ("latency", "lat_p50_ms", "paced p50 ms", False),
    ("latency", "lat_p99_ms", "paced p99 ms", False),
    ("idle", "bytes_per_conn", "bytes per idle subscriber", False),
    ("replay", "replay_events_per_s", "replay events/s", True),
    ("chat", "publish_per_s", "chat publishes/s (one POST per token)", True),
    ("chat", "lat_p99_ms", "chat p99 ms", False),
    ("chat", "deliveries_per_s", "chat deliveries/s", True),
    ("chatstream", "publish_per_s", "chat publishes/s, streamed ingest", True),
    ("chatstream", "lat_p99_ms", "chat p99 ms, streamed ingest", False),
    ("agents", "deliveries_per_s", "in-process agents: tokens delivered/s", True),
    ("agents", "lat_p99_ms", "in-process agents p99 ms", False),
]

_COUNTS = ("lost", "dup", "reordered", "sub_errors", "errors", "publish_failed")


def problems(doc: dict[str, Any], system: str | None = None) -> list[str]:
    """Every run (of `system`, or of any) that lost, repeated or reordered an event, or failed:
    `group/scenario/system: what`."""
    found = []
    for r in doc["records"]:
        if system is not None and r["system"] != system:
            continue
        res = r["result"]
        what = [f"{k} {res[k]}" for k in _COUNTS if res.get(k) and (k != "reordered" or r["ordered"])]
        if "error" in res:
            what.append(str(res["error"]))
        if "stored" in res and res["stored"] != res["published"]:
            what.append(f"the hub stored {res['stored']:,} events, the generator published {res['published']:,}")
        if res.get("sub_error_example"):
            what.append(f"e.g. {res['sub_error_example'][:200]}")
        if what:
            found.append(f"{r['group']}/{r['scenario']}/{r['system']}: {', '.join(what)}")
    return found


def figure(doc: dict[str, Any], group: str, scenario: str, system: str) -> dict[str, Any] | None:
    for r in doc["records"]:
        if (r["group"], r["scenario"], r["system"]) == (group, scenario, system):
            result: dict[str, Any] = r["result"]
            return result
    return None


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def cell(result: dict[str, Any] | None, key: str) -> str:
    if result is None:
        return "—"
    if "unsupported" in result:
        return "not supported"
    if "na" in result:
        return "n/a"
    if "error" in result:
        return "failed"
    value = result.get(key)
    if not isinstance(value, int | float) or value < 0:
        return "—"
    return number(value)


def _value(result: dict[str, Any] | None, key: str) -> float | None:
    if result is None or "error" in result:
        return None
    value = result.get(key)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b is not None else "—"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _main_table(doc: dict[str, Any], systems: list[str]) -> list[str]:
    others = [s for s in systems if s != "ssehub"]
    rows = []
    scenarios = {r["scenario"] for r in doc["records"] if r["group"] == "main"}
    for scenario, key, label, _ in FIGURES:
        if scenario not in scenarios:
            continue
        results = {s: figure(doc, "main", scenario, s) for s in systems}
        ours = _value(results["ssehub"], key)
        ratios = []
        for other in others:
            # Agents run inside ssehub only: they compare with the other's per-token chat of the same shape.
            theirs = _value(figure(doc, "main", "chat", other) if scenario == "agents" else results[other], key)
            ratios.append(_ratio(ours, theirs))
        rows.append([label, *(cell(results[s], key) for s in systems), *ratios])
    return _table(["figure", *systems, *(f"ssehub/{o}" for o in others)], rows)


def _checks(doc: dict[str, Any]) -> list[str]:
    rows = []
    for r in doc["records"]:
        res = r["result"]
        state = "reused: " + r["note"] if r.get("note", "").startswith("the run of") else ""
        if "unsupported" in res:
            state = "not supported: " + res["unsupported"]
        elif "na" in res:
            state = "n/a: " + res["na"]
        elif "error" in res:
            state = "FAILED: " + str(res["error"])[:300]
        elif r.get("note") and not state:
            state = r["note"]
        counts = [f"{res[k]:,}" if k in res else "—" for k in ("stored", "delivered", "lost", "dup", "reordered")]
        if res.get("reordered") and not r["ordered"]:
            counts[-1] += " (racing POSTs)"
        errors = sum(int(res.get(k) or 0) for k in ("sub_errors", "errors", "publish_failed"))
        rows.append(
            [r["group"], r["scenario"], r["size"], r["system"], f"{r['load'][0]:.2f}", *counts, str(errors), state]
        )
    header = ["group", "scenario", "size", "system", "load", "stored", "delivered", "lost", "dup", "reordered"]
    header += ["errors", "notes"]
    return _table(header, rows)


def _sweep(doc: dict[str, Any], group: str, systems: list[str]) -> list[str]:
    records = [r for r in doc["records"] if r["group"] == group]
    if not records:
        return []
    chat = group.startswith("chat")
    points: list[int] = []
    for r in records:
        point = r["params"]["topics"] if chat else r["params"]["subscribers"]
        if point not in points:
            points.append(point)
    key = "publish_per_s" if chat else "deliveries_per_s"
    what = "publishes/s" if chat else "deliveries/s"
    rows = []
    for point in points:
        row = [f"{point:,}"]
        for system in systems:
            result = next(
                (
                    r["result"]
                    for r in records
                    if r["system"] == system
                    and (r["params"]["topics"] if chat else r["params"]["subscribers"]) == point
                ),
                None,
            )
            row += [cell(result, key), cell(result, "lat_p99_ms")]
        rows.append(row)
    header = ["topics" if chat else "subscribers"]
    for system in systems:
        header += [f"{system} {what}", f"{system} p99 ms"]
    return _table(header, rows)


def markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    systems: list[str] = meta["systems"]
    m = meta["machine"]
    lines = [
        f"Run of {meta['date']}: `{meta['command']}`",
        f"ssehub store {meta['store']}, workers {meta['workers']}; size {meta['size']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']:,} MiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['go']}" + (f", {m['nginx']}" if m.get("nginx") else "") + ".",
        f"At the start: {m['uptime']}",
        "",
        *_main_table(doc, systems),
        "",
    ]
    if any(r["scenario"] == "agents" for r in doc["records"]) and len(systems) > 1:
        lines += ["The in-process agents' ratios compare with the other system's chat (one POST per token).", ""]
    for group in ("fanout sweep", "chat sweep"):
        table = _sweep(doc, group, systems)
        if table:
            lines += [f"{group.capitalize()}:", "", *table, ""]
    lines += [
        "Checks (load: the 1-minute load average before the run; stored: the events the hub holds afterwards,",
        "which must be what the generator published):",
        "",
        *_checks(doc),
        "",
    ]
    found = problems(doc)
    lines += [f"PROBLEM {p}" for p in found] or [
        "Every delivery accounted for: nothing lost or repeated, nothing reordered where one writer feeds a topic."
    ]
    return "\n".join(lines) + "\n"
