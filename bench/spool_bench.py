"""Spool throughput and latency: appends/s, fsyncs/s, p50/p99 append latency.

    .venv/bin/python bench/spool_bench.py [--duration 2] [--repeat 3] [--dir DIR]
        [--record-bytes 1024] [--loop uvloop|asyncio]

For 1, 50 and 500 concurrent appenders (asyncio tasks on uvloop, as in hookd) it runs:

* ``sqlite-full``   -- hookd's Spool as shipped (WAL, synchronous=FULL, group commit);
* ``sqlite-normal`` -- the same with synchronous=NORMAL: NOT durable on power loss, shown only
  to price FULL;
* ``log-fdatasync`` -- the floor: a bare append-only file, same writer thread and group commit,
  ``writev`` + ``fdatasync`` per group, no indexing, no deletes, no recovery.

plus ``fsync-floor``: one thread writing 1 KB and fdatasync-ing it in a loop (the disk's
fsync rate without any batching). "fsyncs/s" for the SQLite rows is commits/s: under
synchronous=FULL each commit fsyncs the WAL once (plus a checkpoint's fsyncs every ~1000 pages;
``strace -f -c -e trace=fsync,fdatasync`` confirms the count). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookd.publish.spool import Spool
from hookd.record import Record

CONCURRENCY = (1, 50, 500)


@dataclass
class Result:
    name: str
    appenders: int
    appends: int
    seconds: float
    fsyncs: int
    latencies_ns: list[int]

    def row(self) -> str:
        lat = sorted(self.latencies_ns)
        p50 = lat[len(lat) // 2] / 1e6 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6 if lat else float("nan")
        return (
            f"{self.name:<14} {self.appenders:>9} {self.appends / self.seconds:>11,.0f} "
            f"{self.fsyncs / self.seconds:>9,.0f} {self.appends / max(self.fsyncs, 1):>10.1f} "
            f"{p50:>8.3f} {p99:>8.3f}"
        )


HEADER = (
    f"{'variant':<14} {'appenders':>9} {'appends/s':>11} {'fsyncs/s':>9} {'per fsync':>10} "
    f"{'p50 ms':>8} {'p99 ms':>8}"
)


class NormalSyncSpool(Spool):
    """For comparison only: synchronous=NORMAL (a power loss may drop acknowledged records)."""

    def _setup(self) -> None:
        super()._setup()
        assert self._conn is not None
        self._conn.execute("PRAGMA synchronous=NORMAL")


class GroupLog:
    """The floor: framed records appended to one file, group commit with fdatasync."""

    def __init__(self, path: Path) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self.commits = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    async def append(self, record: Record) -> None:
        frame = struct.pack(">IQ", len(record.value), record.timestamp_ms) + record.value
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((frame, future))
        await future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            group = [item]
            while len(group) < 1024:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ops = [op for op in group if op is not None]
            if ops:
                os.writev(self._fd, [frame for frame, _ in ops])
                os.fdatasync(self._fd)
                self.commits += 1
                self._loop.call_soon_threadsafe(_resolve_all, [f for _, f in ops])
            if len(ops) != len(group):
                os.close(self._fd)
                return

    async def close(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def make_record(i: int, size: int) -> Record:
    return Record(
        topic="bench",
        key=f"delivery-{i}".encode(),
        value=os.urandom(size),
        headers=(
            ("hookd-route", b"/github"),
            ("hookd-verify", b"github"),
            ("content-type", b"application/json"),
        ),
        timestamp_ms=1_700_000_000_000 + i,
    )


async def drive(
    append: Callable[[Record], Awaitable[None]], appenders: int, duration: float, size: int
) -> tuple[int, float, list[int]]:
    records = [make_record(i, size) for i in range(256)]
    latencies: list[int] = []
    deadline = time.monotonic() + duration

    async def appender(n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            start = time.perf_counter_ns()
            await append(records[i % len(records)])
            latencies.append(time.perf_counter_ns() - start)
            i += appenders

    started = time.perf_counter()
    await asyncio.gather(*(appender(n) for n in range(appenders)))
    return len(latencies), time.perf_counter() - started, latencies


async def bench_spool(
    cls: type[Spool], name: str, directory: Path, appenders: int, duration: float, size: int
) -> Result:
    shutil.rmtree(directory, ignore_errors=True)
    spool = await cls.open(directory, 1 << 40)
    try:
        commits0 = spool.commits
        appends, seconds, latencies = await drive(spool.append, appenders, duration, size)
        commits = spool.commits - commits0
    finally:
        await spool.close()
    return Result(name, appenders, appends, seconds, commits, latencies)


async def bench_log(directory: Path, appenders: int, duration: float, size: int) -> Result:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    log = GroupLog(directory / "log")
    try:
        appends, seconds, latencies = await drive(log.append, appenders, duration, size)
    finally:
        await log.close()
    return Result("log-fdatasync", appenders, appends, seconds, log.commits, latencies)


def fsync_floor(directory: Path, duration: float, size: int) -> Result:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "floor", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    payload = os.urandom(size)
    latencies: list[int] = []
    deadline = time.monotonic() + duration
    started = time.perf_counter()
    try:
        while time.monotonic() < deadline:
            t = time.perf_counter_ns()
            os.write(fd, payload)
            os.fdatasync(fd)
            latencies.append(time.perf_counter_ns() - t)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    return Result("fsync-floor", 1, len(latencies), seconds, len(latencies), latencies)


async def main_async(args: argparse.Namespace) -> None:
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="spool-bench-"))
    size = args.record_bytes
    print(
        f"dir {base}  record {size} B  {args.duration:g} s per run  {args.repeat} runs per row "
        f"(interleaved; the median run is shown, range in brackets)  loop {args.loop}"
    )
    variants: dict[str, Callable[[int], Awaitable[Result]]] = {
        "sqlite-full": lambda n: bench_spool(
            Spool, "sqlite-full", base / "full", n, args.duration, size
        ),
        "sqlite-normal": lambda n: bench_spool(
            NormalSyncSpool, "sqlite-normal", base / "normal", n, args.duration, size
        ),
        "log-fdatasync": lambda n: bench_log(base / "log", n, args.duration, size),
    }
    results: dict[tuple[str, int], list[Result]] = {}
    # Interleave variants and repeats: the disk is shared and drifts; medians of interleaved
    # runs compare the variants under the same conditions.
    for _ in range(args.repeat):
        floor = fsync_floor(base / "floor", args.duration, size)
        results.setdefault(("fsync-floor", 1), []).append(floor)
        for appenders in CONCURRENCY:
            for name, run in variants.items():
                results.setdefault((name, appenders), []).append(await run(appenders))
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{HEADER} {'appends/s range':>19}")
    medians: dict[tuple[str, int], float] = {}
    for key in [("fsync-floor", 1)] + [(v, n) for v in variants for n in CONCURRENCY]:
        runs = sorted(results[key], key=lambda r: r.appends / r.seconds)
        rates = [r.appends / r.seconds for r in runs]
        medians[key] = rates[len(rates) // 2]
        print(f"{runs[len(runs) // 2].row()} {f'[{rates[0]:,.0f}-{rates[-1]:,.0f}]':>19}")
    ratios = ", ".join(
        f"{n}: {medians['log-fdatasync', n] / medians['sqlite-full', n]:.2f}x" for n in CONCURRENCY
    )
    print(f"log-fdatasync / sqlite-full, median appends/s, by appenders: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row")
    parser.add_argument("--dir", help="where to write (default: a temp dir, removed after)")
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    runner: Any
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    runner(main_async(args))


if __name__ == "__main__":
    main()
