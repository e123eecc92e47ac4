"""kill -9 mid-stream: every append that returned before the kill is in the spool afterwards.

A child process appends as fast as it can with many concurrent appenders and writes the index
of each record to stdout (one ``write`` per line, unbuffered) only after its ``append``
returned. The parent SIGKILLs it mid-stream, collects every index the child managed to write,
reopens the spool and checks that each of those records is there, byte for byte.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hookd.publish.spool import Spool, SpoolLocked
from hookd.record import Record

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, os, sys
from pathlib import Path
from hookd.publish.spool import Spool, SpoolLocked
from hookd.record import Record

def record(i):
    return Record(
        topic="crash",
        key=str(i).encode(),
        value=f"{i}:".encode().ljust(1024, b"x"),
        headers=(("i", str(i).encode()), ("bin", bytes([i % 256, 0, 255]))),
        timestamp_ms=1_700_000_000_000 + i,
    )

async def main():
    spool = await Spool.open(Path(sys.argv[1]), 1 << 30)
    start = int(sys.argv[2])
    slots = asyncio.Semaphore(64)

    async def one(i):
        try:
            await spool.append(record(i))
            os.write(1, f"{i}\n".encode())  # only after append returned
        finally:
            slots.release()

    tasks = set()
    for i in range(start, start + 1_000_000):
        await slots.acquire()
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

asyncio.run(main())
"""


def expected(i: int) -> Record:
    return Record(
        topic="crash",
        key=str(i).encode(),
        value=f"{i}:".encode().ljust(1024, b"x"),
        headers=(("i", str(i).encode()), ("bin", bytes([i % 256, 0, 255]))),
        timestamp_ms=1_700_000_000_000 + i,
    )


def run_and_kill(spool_dir: Path, script: Path, start: int, kill_after: int) -> set[int]:
    """Start the child, SIGKILL it once it reported ``kill_after`` appends; return every index
    it reported (including those still in the pipe when it died)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(spool_dir), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + 60
    try:
        while buffer.count(b"\n") < kill_after:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "child reported too few appends in time"
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                _, err = proc.communicate(timeout=10)
                raise AssertionError(f"child exited early ({proc.returncode}): {err.decode()}")
            buffer += chunk
        assert proc.poll() is None, "the child must be mid-stream when it is killed"
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    buffer += rest
    lines = buffer.split(b"\n")
    # A line cut by the kill is not a reported append: only complete lines count.
    return {int(line) for line in lines[:-1]}


def read_back(spool_dir: Path) -> tuple[list[tuple[int, Record]], int, int]:
    async def read() -> tuple[list[tuple[int, Record]], int, int]:
        spool = await Spool.open(spool_dir, 1 << 30)
        try:
            return await spool.oldest(10_000_000), spool.depth, spool.size_bytes
        finally:
            await spool.close()

    return asyncio.run(read())


@pytest.mark.timeout(180)
def test_every_returned_append_survives_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spool_dir = tmp_path / "spool"
    acknowledged: set[int] = set()
    # Several rounds into the same spool: each kill lands at a different point, and each round
    # also proves the previous kill left a spool that opens (lock released, WAL recovered).
    for round_no, kill_after in enumerate((300, 1500, 4000)):
        reported = run_and_kill(spool_dir, script, round_no * 1_000_000, kill_after)
        assert len(reported) >= kill_after  # the kill hit a spool holding this round's appends
        acknowledged |= reported
        rows, depth, size_bytes = read_back(spool_dir)
        present = {int(rec.key) for _, rec in rows if rec.key is not None}
        missing = acknowledged - present
        assert not missing, f"{len(missing)} acknowledged appends lost, e.g. {sorted(missing)[:10]}"
        # Whatever is there (acknowledged or committed just before the kill) is intact.
        assert depth == len(rows) == len(present) >= len(acknowledged)
        for _, rec in rows:
            assert rec == expected(int(rec.key or b"-1"))
        assert size_bytes > 0
    assert len(acknowledged) >= 300 + 1500 + 4000


HOLDER = r"""
import asyncio, os, sys
from pathlib import Path
from hookd.publish.spool import Spool, SpoolLocked

async def main():
    spool = await Spool.open(Path(sys.argv[1]), 1 << 20)
    os.write(1, b"open\n")
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.timeout(60)
def test_another_process_is_refused_while_one_holds_the_spool(tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    spool_dir = tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(spool_dir)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 30)
        assert readable and proc.stdout.readline() == b"open\n"

        async def try_open() -> None:
            spool = await Spool.open(spool_dir, 1 << 20)
            await spool.close()

        with pytest.raises(SpoolLocked, match=f"pid {proc.pid}"):
            asyncio.run(try_open())
        proc.kill()
        proc.wait(timeout=30)
        asyncio.run(try_open())  # the kernel dropped the dead holder's lock
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
