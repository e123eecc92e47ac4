"""The report: results.md (tables, ratios, skips and flags), results.json, chart.png, and the
one-line console summary of a run.

Everything here reads ``RunResult`` records and the run's ``meta`` and writes text or a
picture; nothing here measures, so a stored results.json can be re-rendered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from record import Median, RunResult
from servers import SERVERS, Layout, ServerSpec

#: The spool path may cost this much CPU per request relative to a direct delivery.
SPOOL_CPU_GOAL = 1.25


def write_report(out: Path, meta: dict[str, Any], results: list[RunResult]) -> None:
    """All three files at once, after every run, so that partial results survive a crash."""
    out.mkdir(parents=True, exist_ok=True)
    stored = {"meta": meta, "results": [r.to_json() for r in results]}
    (out / "results.json").write_text(json.dumps(stored, indent=2))
    (out / "results.md").write_text(markdown(meta, results))
    chart(out / "chart.png", meta, results)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


RESULT_HEADER = [
    "| scenario | server | req/s | p50 ms | p99 ms | CPU µs/req | server CPU % | "
    "others on server CPU % | load CPU % | RSS MB | PSS MB | port s | ready s | non-2xx "
    "| records ok | flags |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|",
]


def _result_rows(results: list[RunResult]) -> list[str]:
    lines = []
    for r in results:
        run = r.ok
        if run is None:
            lines.append(
                f"| {r.scenario} | {r.label} | {r.status}: "
                f"{r.reason.splitlines()[0][:160]} |" + " |" * 13
            )
            continue
        m, mem, st, rec = run.median, run.memory_after, run.startup, run.records
        if not rec.checked:
            records = "n/a (publishes nothing)"
        else:
            records = f"{'yes' if rec.ok else '**NO**'} ({rec.consumed}/{rec.answered_2xx})"
        lines.append(
            f"| {r.scenario} | {r.label} | {_fmt(m.rps)} | {_fmt(m.p50_ms, 2)} | "
            f"{_fmt(m.p99_ms, 2)} | {_fmt(m.cpu_us_per_req)} | "
            f"{_fmt(m.server_cpu_pct)} | {_fmt(m.foreign_server_cpu_pct)} | "
            f"{_fmt(m.load_cpu_pct)} | "
            f"{_fmt(mem.rss_kb / 1024, 1)} | {_fmt(mem.pss_kb / 1024, 1)} | "
            f"{_fmt(st.port_s, 2)} | {_fmt(st.ready_s, 2)} | {run.non_2xx} | "
            f"{records} | {'; '.join(r.flags) or ''} |"
        )
    return lines


def markdown(meta: dict[str, Any], results: list[RunResult]) -> str:
    """results.md: how it was run, the tables, the ratios, and every skip, flag and note."""
    a = meta["args"]
    main_results = [r for r in results if r.is_main]
    scaling_results = [r for r in results if not r.is_main]
    layout = Layout(
        (a["server_cpu"],), (a["load_cpu"],), (a["broker_cpu"],), 1, a["connections_count"]
    )
    lines = [
        "# hookd benchmark results",
        "",
        f"- **Date**: {meta['date']}",
        f"- **Command**: `{meta['command']}`",
        f"- **Machine**: {meta['machine']['cpu']}, {meta['machine']['cpus']} CPUs, "
        f"{meta['machine']['memory']}, Linux {meta['machine']['kernel']}",
        f"- **Pinning**: {layout.describe()}",
        f"- **Load**: wrk -t1 -c{a['connections_count']}, {a['warmup']:g} s warm-up, then "
        f"{a['rounds']} x {a['duration']:g} s; medians of the rounds. Bodies: "
        f"{a['pool']} distinct signed Segment `track` events per size.",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    ]
    scaling = meta.get("scaling")
    if scaling:
        lines.append(f"- **Workers scenario** (`--workers {scaling['workers']}`): " + (
            f"SKIPPED: {scaling['reason']}" if scaling["status"] == "skipped"
            else f"{scaling['size']} {scaling['connection']}, {scaling['layout']}"
        ))  # fmt: skip
    for rerun in meta.get("reruns", []):
        lines.append(
            f"- **Rerun** {rerun['date']} (`{rerun['command']}`), same load settings, of the "
            f"runs that were contended or failed: {'; '.join(rerun['runs']) or 'none'}"
        )
    main_rev = meta["versions"].get("hookd git")
    revs = {r["versions"].get("hookd git") for r in meta.get("reruns", [])} - {main_rev}
    digests = {
        run.hookd_sources
        for r in results
        if r.family == "hookd" and (run := r.ok) and run.hookd_sources
    }
    if revs or len(digests) > 1:
        lines.append(
            f"- **WARNING: hookd changed during this result set** (git {main_rev}, then "
            f"{', '.join(sorted(map(str, revs))) or 'uncommitted edits'}"
            + (f"; {len(digests)} distinct hookd source digests" if len(digests) > 1 else "")
            + "). hookd rows may come "
            "from different code: rerun the whole set on a frozen tree before comparing them."
        )
    lines += [
        "",
        "CPU µs/req = server process tree utime+stime over the measured window ÷ requests. "
        "Server CPU % is of the server's cores (100 % = CPU-bound). Load CPU % = wrk"
        + (" + broker" if a["broker_cpu"] == a["load_cpu"] else "")
        + f" on CPU {a['load_cpu']}. Others on server CPU % = CPU {a['server_cpu']} busy minus "
        "the server's own time: other processes on this shared machine (a round over "
        f"{a['max_foreign_cpu']:g} % is rerun, up to {a['retries']} times, then flagged). "
        "Records: read back from the topic, must be ≥ answered 2xx (the ceiling publishes "
        "nothing: n/a)."
        + (
            " hookd ack=spool answers before it publishes: each of its rounds lasts until its "
            "spool has forwarded what the round took, so its CPU µs/req includes that "
            "forwarding (the drain after wrk stops)."
            if _any_drained(main_results)
            else ""
        ),
        "",
        "## Results",
        "",
        *RESULT_HEADER,
        *_result_rows(main_results),
    ]
    lines += ["", "## hookd / peer ratios", ""]
    primary = [s for s in SERVERS if s.primary]
    extras = [s for s in SERVERS if s.family == "peer" and not s.primary]
    ratio_rows = ratios(main_results, primary)
    if ratio_rows:
        lines += [
            f"Against the primary peer, **{primary[0].label}**: what a Python user would deploy "
            "instead. req/s ratio > 1: hookd serves more; CPU ratio < 1: hookd spends less CPU "
            "per request; p99 ratio < 1: hookd's tail is shorter.",
            "",
            "| scenario | hookd | req/s hookd/peer | CPU µs/req hookd/peer | p99 hookd/peer |",
            "|---|---|--:|--:|--:|",
        ]
        lines += [
            f"| {s} | {h} | {rps:.2f} | {cpu:.2f} | {p99:.2f} |"
            for s, h, _p, rps, cpu, p99 in ratio_rows
        ]
    else:
        lines.append(
            "No ratios: hookd and the primary peer have no successful run in the same scenario."
        )
    extra_rows = ratios(main_results, extras)
    if extra_rows:
        lines += [
            "",
            "Against the extra rows (not the headline):",
            "",
            "| scenario | hookd | peer | req/s hookd/peer | CPU µs/req hookd/peer "
            "| p99 hookd/peer |",
            "|---|---|---|--:|--:|--:|",
        ]
        lines += [
            f"| {s} | {h} | {p} | {rps:.2f} | {cpu:.2f} | {p99:.2f} |"
            for s, h, p, rps, cpu, p99 in extra_rows
        ]
    ceiling_rows = ceiling_ratios(main_results)
    if ceiling_rows:
        lines += [
            "",
            "## hookd / ceiling",
            "",
            "The ceiling answers a canned 200 and **neither verifies nor publishes**: its CPU µs "
            "per request is the least a Python server on uvloop spends here on accepting, "
            "reading, framing and answering. CPU ÷ ceiling = how many times that floor a server "
            "spends (the rest is its HTTP handling, verification and publishing); req/s ÷ "
            "ceiling = the fraction of this core's limit it reaches. When the ceiling row is "
            "flagged as limited by the load side, its req/s is a lower bound (so req/s ÷ "
            "ceiling overstates), and its CPU µs/req still holds.",
            "",
            "| scenario | server | CPU µs/req | ceiling CPU µs/req | CPU server/ceiling "
            "| req/s server/ceiling |",
            "|---|---|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {s} | {label} | {_fmt(m.cpu_us_per_req)} | {_fmt(c.cpu_us_per_req)} | "
            f"{m.cpu_us_per_req / c.cpu_us_per_req:.2f} | {m.rps / c.rps:.2f} |"
            for s, label, m, c in ceiling_rows
        ]
    spool_rows = spool_ratios(main_results)
    if spool_rows:
        lines += [
            "",
            "## ack=spool / ack=kafka",
            "",
            "What the spool's durable local write costs on top of a direct delivery, same run: "
            "CPU µs per request of `hookd ack=spool` ÷ `hookd ack=kafka`. The goal is "
            f"≤ {SPOOL_CPU_GOAL:.2f}x.",
            "",
            "| scenario | kafka CPU µs/req | spool CPU µs/req | spool/kafka CPU | "
            "kafka req/s | spool req/s |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {s} | {_fmt(k.cpu_us_per_req)} | {_fmt(sp.cpu_us_per_req)} | "
            f"{sp.cpu_us_per_req / k.cpu_us_per_req:.2f}"
            f"{'' if sp.cpu_us_per_req <= SPOOL_CPU_GOAL * k.cpu_us_per_req else ' **over**'}"
            f" | {_fmt(k.rps)} | {_fmt(sp.rps)} |"
            for s, k, sp in spool_rows
        ]
    lines += _scaling_section(scaling, scaling_results)
    skipped = [r for r in results if r.ok is None]
    if skipped:
        lines += ["", "## Skipped (not measured)", ""]
        for r in skipped:
            reason = r.reason.replace("\n", "\n    ")
            lines.append(f"- **{r.label}, {r.scenario}**: {r.status}\n\n    {reason}\n")
    flagged = [r for r in results if r.ok and r.flags]
    lines += ["", "## Flags", ""]
    if flagged:
        lines += [f"- {r.label}, {r.scenario}: {'; '.join(r.flags)}" for r in flagged]
    else:
        lines.append("None: every measured run answered only 2xx and every record landed.")
    noted = [r for r in results if r.notes]
    if noted:
        lines += ["", "## Notes", ""]
        lines += [f"- {r.label}, {r.scenario}: {'; '.join(r.notes)}" for r in noted]
    ran = {r.server for r in results}
    notes = [s for s in SERVERS if s.name in ran]
    if notes:
        lines += ["", "## Server notes", ""]
        for spec in notes:
            said = sorted({line for r in results if r.server == spec.name and (run := r.ok)
                           for line in run.reported})  # fmt: skip
            text = spec.notes or ""
            if said:
                text += (
                    ("; " if text else "")
                    + "it reported at start-up: "
                    + "; ".join(f"`{line}`" for line in said)
                )
            if text:
                lines.append(f"- {spec.label}: {text}")
    return "\n".join(lines) + "\n"


def _scaling_section(scaling: dict[str, Any] | None, rows: list[RunResult]) -> list[str]:
    """The --workers N table and scaling efficiency, or why it was not run."""
    lines = ["", "## Scaling (`--workers N`)", ""]
    if not scaling:
        return [*lines, "Not run (`--workers 0` or fewer than 2)."]
    n = scaling["workers"]
    if scaling["status"] == "skipped":
        return [*lines, f"**Skipped, not measured**: {scaling['reason']}."]
    lines += [
        f"Each server with 1 worker process and with {n} ({scaling['size']} "
        f"{scaling['connection']}), in one layout for both: {scaling['layout']}. hookd runs "
        f"`workers = N` (SO_REUSEPORT), uvicorn `--workers N`, the ceiling N forked processes. "
        f"Server CPU % is of the server's cores. Scaling efficiency = req/s with {n} workers "
        f"÷ ({n} x req/s with 1); 1.00 is linear.",
        "",
        *RESULT_HEADER,
        *_result_rows(rows),
        "",
        f"| server | req/s, 1 worker | req/s, {n} workers | CPU µs/req, 1 | CPU µs/req, {n} "
        "| scaling efficiency |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    ok = {(r.server, r.workers): (r, run) for r in rows if (run := r.ok)}
    for spec in SERVERS:
        one, many = ok.get((spec.name, 1)), ok.get((spec.name, n))
        if one and many:
            m1, mn = one[1].median, many[1].median
            mark = " (flagged)" if one[0].flags or many[0].flags else ""
            lines.append(
                f"| {spec.label}{mark} | {_fmt(m1.rps)} | {_fmt(mn.rps)} | "
                f"{_fmt(m1.cpu_us_per_req)} | {_fmt(mn.cpu_us_per_req)} | "
                f"{mn.rps / (n * m1.rps):.2f} |"
            )
    return lines


def _ok(results: list[RunResult]) -> dict[tuple[str, str], tuple[Median, bool]]:
    """(server, scenario) -> (its medians, whether it is flagged), for the measured runs."""
    return {(r.server, r.scenario): (run.median, bool(r.flags)) for r in results if (run := r.ok)}


def ratios(
    results: list[RunResult], peers: list[ServerSpec]
) -> list[tuple[str, str, str, float, float, float]]:
    """``(scenario, hookd label, peer label, req/s, CPU/req, p99)``, each hookd ÷ peer."""
    ok = _ok(results)
    rows = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        for hookd in (s for s in SERVERS if s.family == "hookd"):
            for peer in peers:
                h, p = ok.get((hookd.name, scenario)), ok.get((peer.name, scenario))
                if h and p:
                    (hm, h_flagged), (pm, p_flagged) = h, p
                    mark = " (flagged)" if h_flagged or p_flagged else ""
                    rows.append(
                        (
                            scenario + mark,
                            hookd.label,
                            peer.label,
                            hm.rps / pm.rps,
                            hm.cpu_us_per_req / pm.cpu_us_per_req,
                            hm.p99_ms / pm.p99_ms,
                        )
                    )
    return rows


def ceiling_ratios(results: list[RunResult]) -> list[tuple[str, str, Median, Median]]:
    """``(scenario, label, its median, the ceiling's median)`` for hookd and the primary peer."""
    ok = _ok(results)
    rows = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        ceiling = ok.get(("ceiling", scenario))
        if not ceiling:
            continue
        for spec in SERVERS:
            if spec.family == "hookd" or spec.primary:
                other = ok.get((spec.name, scenario))
                if other:
                    mark = " (flagged)" if other[1] or ceiling[1] else ""
                    rows.append((scenario + mark, spec.label, other[0], ceiling[0]))
    return rows


def spool_ratios(results: list[RunResult]) -> list[tuple[str, Median, Median]]:
    """``(scenario, kafka median, spool median)`` where both hookd variants ran."""
    ok = _ok(results)
    rows = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        kafka, spool = ok.get(("hookd-kafka", scenario)), ok.get(("hookd-spool", scenario))
        if kafka and spool:
            mark = " (flagged)" if kafka[1] or spool[1] else ""
            rows.append((scenario + mark, kafka[0], spool[0]))
    return rows


def chart(path: Path, meta: dict[str, Any], results: list[RunResult]) -> None:
    """chart.png: req/s and CPU µs per request per server and scenario, main table only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the main table only; the ceiling's bars (several times hookd's req/s) would flatten
    # every other bar, so it is left to results.md
    results = [r for r in results if r.is_main and r.family != "ceiling"]
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    servers = [s for s in SERVERS if any(r.server == s.name for r in results)]
    ok = _ok(results)
    if not scenarios:
        return
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(scenarios) + 3), 8.5), sharex=True)
    width = 0.8 / max(1, len(servers))
    for panel, (key, title) in zip(
        axes,
        (
            ("rps", "requests/s (higher is better)"),
            ("cpu_us_per_req", "server CPU µs per request (lower is better)"),
        ),
        strict=True,
    ):
        for i, server in enumerate(servers):
            xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(scenarios))]
            values = [
                getattr(ok[(server.name, s)][0], key) if (server.name, s) in ok else 0.0
                for s in scenarios
            ]
            bars = panel.bar(xs, values, width, label=server.label)
            for bar, s in zip(bars, scenarios, strict=True):
                if (server.name, s) not in ok:
                    panel.annotate("skipped", (bar.get_x() + width / 2, 0), rotation=90,
                                   ha="center", va="bottom", fontsize=7, color="grey")  # fmt: skip
                elif ok[(server.name, s)][1]:
                    panel.annotate("!", (bar.get_x() + width / 2, bar.get_height()),
                                   ha="center", va="bottom", color="red")  # fmt: skip
        panel.set_title(title)
        panel.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(range(len(scenarios)), scenarios)
    a = meta["args"]
    fig.suptitle(
        f"hookd vs peers — {meta['date'][:10]}, {meta['machine']['cpu']}, server on 1 pinned CPU, "
        f"wrk -c{a['connections_count']}, median of {a['rounds']}x{a['duration']:g}s; "
        "red ! = flagged run; the ceiling row is in results.md",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _any_drained(results: list[RunResult]) -> bool:
    return any(
        round_.drain_cpu_s
        for r in results
        if r.measured is not None
        for round_ in r.measured.rounds
    )


def summary(r: RunResult) -> str:
    """The console lines printed after each run."""
    run = r.ok
    if run is None:
        return f"{r.status.upper()}: " + r.reason.replace("\n", "\n        ")
    m, rec = run.median, run.records
    check = "OK" if rec.ok else "FAILED"
    records = (
        f"records check {check}: {rec.consumed} records in the topic, "
        f"{rec.answered_2xx} answered 2xx"
        if rec.checked
        else f"no records check (publishes nothing), {rec.answered_2xx} answered 2xx"
    )
    text = (
        f"{m.rps:,.0f} req/s  p50 {m.p50_ms:.2f} ms  p99 {m.p99_ms:.2f} ms  "
        f"{m.cpu_us_per_req:,.0f} CPU µs/req  server CPU {m.server_cpu_pct:.0f}%  "
        f"load CPU {m.load_cpu_pct:.0f}%  others {m.foreign_server_cpu_pct:.0f}%  "
        f"ready {run.startup.ready_s:.2f}s\n"
        f"    {records}"
    )
    drains = [round_.drain_s for round_ in run.rounds if round_.drain_cpu_s]
    if drains:
        text += f"\n    spool empty {max(drains):.1f}s after each round, at most (CPU counted)"
    if r.flags:
        text += "\n    FLAGS: " + "; ".join(r.flags)
    if r.notes:
        text += "\n    notes: " + "; ".join(r.notes)
    return text


def ratio_lines(results: list[RunResult]) -> list[str]:
    """The console's closing lines: hookd against each peer and against the ceiling."""
    main_results = [r for r in results if r.is_main]
    lines = [
        f"    ratio {row[0]:<15} {row[1]} / {row[2]}: req/s x{row[3]:.2f}, "
        f"CPU/req x{row[4]:.2f}, p99 x{row[5]:.2f}"
        for row in ratios(main_results, [s for s in SERVERS if s.family == "peer"])
    ]
    for scenario, label, m, c in ceiling_ratios(main_results):
        cpu = m.cpu_us_per_req / c.cpu_us_per_req
        lines.append(
            f"    ceiling {scenario:<15} {label}: CPU/req x{cpu:.2f} the ceiling's, "
            f"req/s x{m.rps / c.rps:.2f}"
        )
    return lines
