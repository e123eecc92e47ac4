"""The spool against real SQLite files in tmp_path: order, exactness, limits, grouping, locking,
and the durability settings.

Power loss is not simulated here. A ``kill -9`` (tests/integration/test_spool_crash.py) leaves
the kernel's page cache intact, so it proves that committed transactions survive the process,
not that they reached the disk: with ``PRAGMA synchronous=OFF`` it passes too. A real power-loss
test needs writes that were not fsynced to vanish: a block device that drops them (dm-flakey or
dm-log-writes, which need root and device-mapper, neither available to this suite) or an SQLite
VFS that tracks unsynced writes (the stdlib ``sqlite3`` module the spool uses cannot register
one). Instead, the settings that make a commit wait for the disk are asserted on the spool's own
live connection -- ``synchronous=FULL`` (in WAL mode: the WAL is fsynced before COMMIT returns),
``journal_mode=WAL``, ``fullfsync`` -- and the directory fsync that makes the new files' entries
durable is observed as it happens. What is not proven: that the disk honours fsync.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.publish import spool as spool_module
from hookd.publish.spool import (
    Spool,
    SpoolClosed,
    SpoolError,
    SpoolFull,
    SpoolLocked,
    _decode_headers,
    _encode_headers,
)
from hookd.record import Record

T = TypeVar("T")
BIG = 1 << 30


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=30)

    return asyncio.run(bounded())


def record(i: int, *, size: int = 100) -> Record:
    return Record(
        topic="events",
        key=f"k{i}".encode(),
        value=f"{i}:".encode().ljust(size, b"v"),
        headers=(("hookd-route", b"/r"), ("n", str(i).encode())),
        timestamp_ms=1_700_000_000_000 + i,
    )


async def everything(spool: Spool) -> list[tuple[int, Record]]:
    return await spool.oldest(1_000_000)


ODD_RECORDS = [
    Record(topic="t", key=None, value=b"", headers=(), timestamp_ms=0),
    Record(topic="t", key=b"", value=b"\x00", headers=(("", b""),), timestamp_ms=1),
    Record(
        topic="github-events",
        key=b"\xff\x00key",
        value=bytes(range(256)) * 4,
        headers=(
            ("dup", b"1"),
            ("dup", b"2"),
            ("content-type", b"application/json; charset=utf-8"),
            ("h\u00e9ader-\u2603", b"\x00\xff\r\n"),
        ),
        timestamp_ms=2**62,
    ),
    Record(topic="t", key=b"k", value=b'{"a":1}', headers=(("x", b"y"),), timestamp_ms=-5),
]


def test_append_then_oldest_returns_exact_records_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path / "spool", BIG)
        try:
            for rec in ODD_RECORDS:
                await spool.append(rec)
            rows = await spool.oldest(10)
            assert [rec for _, rec in rows] == ODD_RECORDS
            ids = [row_id for row_id, _ in rows]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            assert all(type(rec.key) in (bytes, type(None)) for _, rec in rows)
            assert rows[0][1].key is None and rows[1][1].key == b""
            assert [rec for _, rec in await spool.oldest(2)] == ODD_RECORDS[:2]
            assert await spool.oldest(0) == []
            assert spool.depth == len(ODD_RECORDS)
            assert spool.oldest_timestamp_ms == 0
        finally:
            await spool.close()

    run(scenario)
    assert (tmp_path / "spool" / "spool-0.db").exists()


def test_delete_removes_records_and_updates_counters(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            for i in range(10):
                await spool.append(record(i))
            full_size = spool.size_bytes
            rows = await spool.oldest(10)
            await spool.delete([row_id for row_id, _ in rows[:3]])
            remaining = await everything(spool)
            assert [rec for _, rec in remaining] == [record(i) for i in range(3, 10)]
            assert spool.depth == 7
            assert spool.size_bytes == full_size * 7 // 10
            assert spool.oldest_timestamp_ms == record(3).timestamp_ms
            # A retried delete (the forwarder crashed before noticing) and unknown ids are no-ops.
            await spool.delete([rows[0][0], 999_999])
            assert spool.depth == 7
            await spool.delete([row_id for row_id, _ in remaining])
            assert await everything(spool) == []
            assert (spool.depth, spool.size_bytes, spool.oldest_timestamp_ms) == (0, 0, None)
            await spool.append(record(42))
            (new_id, new_rec), *_ = await everything(spool)
            assert new_rec == record(42)
            assert new_id > remaining[-1][0]  # ids never go back, even once the spool emptied
        finally:
            await spool.close()

    run(scenario)


def test_delete_of_many_ids_spans_chunks(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            await asyncio.gather(*(spool.append(record(i, size=10)) for i in range(1200)))
            rows = await spool.oldest(1200)
            await spool.delete([row_id for row_id, _ in rows[:1100]])
            assert spool.depth == 100
            assert [rec for _, rec in await everything(spool)] == [r for _, r in rows[1100:]]
        finally:
            await spool.close()

    run(scenario)


def test_reopen_after_close_recovers_everything(tmp_path: Path) -> None:
    async def first() -> tuple[list[tuple[int, Record]], int]:
        spool = await Spool.open(tmp_path, BIG)
        for rec in ODD_RECORDS:
            await spool.append(rec)
        await asyncio.gather(*(spool.append(record(i)) for i in range(50)))
        rows = await everything(spool)
        await spool.delete([rows[0][0]])
        size = spool.size_bytes
        await spool.close()
        return rows[1:], size

    async def second() -> tuple[list[tuple[int, Record]], int, int, int | None]:
        spool = await Spool.open(tmp_path, BIG)
        try:
            return (
                await everything(spool),
                spool.depth,
                spool.size_bytes,
                spool.oldest_timestamp_ms,
            )
        finally:
            await spool.close()

    before, size_before = run(first)
    after, depth, size, oldest = run(second)
    assert after == before
    assert depth == len(before) == len(ODD_RECORDS) - 1 + 50
    assert size == size_before
    assert oldest == ODD_RECORDS[1].timestamp_ms


def test_spool_full_is_checked_before_writing_and_clears_after_delete(tmp_path: Path) -> None:
    async def scenario() -> None:
        probe = tmp_path / "probe"
        spool = await Spool.open(probe, BIG)
        await spool.append(record(0))
        one = spool.size_bytes
        await spool.close()

        spool = await Spool.open(tmp_path / "spool", max_bytes=3 * one)
        try:
            for i in range(3):
                await spool.append(record(i))
            assert spool.size_bytes == 3 * one
            commits = spool.commits
            with pytest.raises(SpoolFull):
                await spool.append(record(3))
            assert spool.commits == commits  # nothing was written
            assert spool.depth == 3
            rows = await spool.oldest(1)
            await spool.delete([rows[0][0]])
            await spool.append(record(3))
            assert [rec for _, rec in await everything(spool)] == [record(i) for i in (1, 2, 3)]
            with pytest.raises(SpoolFull):
                await spool.append(record(4))
        finally:
            await spool.close()

    run(scenario)


def test_spool_full_counts_appends_still_in_flight(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, max_bytes=10_000)
        try:
            results = await asyncio.gather(
                *(spool.append(record(i, size=1000)) for i in range(40)), return_exceptions=True
            )
            ok = [r for r in results if r is None]
            full = [r for r in results if isinstance(r, SpoolFull)]
            assert len(ok) + len(full) == 40
            assert ok and full
            assert spool.depth == len(ok)
            assert spool.size_bytes <= 10_000
        finally:
            await spool.close()

    run(scenario)


def test_concurrent_appends_are_group_committed(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            start = spool.commits
            await asyncio.gather(*(spool.append(record(i)) for i in range(500)))
            commits = spool.commits - start
            assert 1 <= commits < 50, commits
            assert spool.depth == 500
            assert sorted(rec.value for _, rec in await everything(spool)) == sorted(
                record(i).value for i in range(500)
            )
            # Sequential appends cannot be grouped: one commit each.
            before = spool.commits
            for i in range(5):
                await spool.append(record(1000 + i))
            assert spool.commits - before == 5
        finally:
            await spool.close()

    run(scenario)


def test_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = await Spool.open(tmp_path, BIG)
        try:
            with pytest.raises(SpoolLocked, match="in use") as refused:
                await Spool.open(tmp_path, BIG)
            assert str(first.lock_path) in str(refused.value)
            other_worker = await Spool.open(tmp_path, BIG, worker_index=1)
            await other_worker.append(record(1))
            await other_worker.close()
            assert other_worker.db_path.name == "spool-1.db"
            await first.append(record(0))
        finally:
            await first.close()
        again = await Spool.open(tmp_path, BIG)
        try:
            assert [rec for _, rec in await everything(again)] == [record(0)]
        finally:
            await again.close()

    run(scenario)


def test_close_waits_for_queued_writes_and_is_idempotent(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        tasks = [asyncio.create_task(spool.append(record(i))) for i in range(300)]
        await asyncio.sleep(0)  # every task has queued its record, none is committed yet
        await asyncio.gather(spool.close(), spool.close())
        await asyncio.gather(*tasks)  # all succeeded: close drained the queue first
        await spool.close()
        with pytest.raises(SpoolClosed):
            await spool.append(record(999))
        with pytest.raises(SpoolClosed):
            await spool.oldest(1)
        with pytest.raises(SpoolClosed):
            await spool.delete([1])

        reopened = await Spool.open(tmp_path, BIG)
        try:
            assert reopened.depth == 300
            got = sorted(rec.value for _, rec in await everything(reopened))
            assert got == sorted(record(i).value for i in range(300))
        finally:
            await reopened.close()

    run(scenario)


def test_a_failed_commit_fails_its_appends_and_the_spool_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another SQLite client holding the write lock makes the commit fail: the waiting append
    gets SpoolError promptly (never hangs) and later appends work."""
    monkeypatch.setattr(spool_module, "BUSY_TIMEOUT_S", 0.05)

    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            await spool.append(record(0))
            intruder = sqlite3.connect(spool.db_path, isolation_level=None)
            try:
                intruder.execute("BEGIN IMMEDIATE")
                results = await asyncio.gather(
                    *(spool.append(record(i)) for i in (1, 2, 3)), return_exceptions=True
                )
                assert all(isinstance(r, SpoolError) for r in results), results
                assert isinstance(results[0].__cause__, sqlite3.OperationalError)
                assert spool.depth == 1
                # SpoolFull accounting released the failed appends' bytes.
                assert spool._pending_bytes == 0
            finally:
                intruder.execute("ROLLBACK")
                intruder.close()
            await spool.append(record(4))
            assert [rec for _, rec in await everything(spool)] == [record(0), record(4)]
        finally:
            await spool.close()

    run(scenario)


def test_the_live_connection_commits_with_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pragmas read back from the spool's own connection (``synchronous`` and ``fullfsync``
    are per connection: a second connection would not see them)."""
    connections: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        # check_same_thread off: the test reads the writer's connection while the writer idles
        conn = connect(*args, **{**kwargs, "check_same_thread": False})  # type: ignore[arg-type]
        connections.append(conn)
        return conn

    monkeypatch.setattr(spool_module.sqlite3, "connect", recording_connect)

    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            await spool.append(record(0))
            [conn] = connections
            pragma = {
                name: conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in (
                    "synchronous",
                    "journal_mode",
                    "fullfsync",
                    "checkpoint_fullfsync",
                    "journal_size_limit",
                )
            }
            assert pragma == {
                "synchronous": 2,  # FULL; NORMAL (1) would fsync the WAL only at checkpoints
                "journal_mode": "wal",
                "fullfsync": 1,
                "checkpoint_fullfsync": 1,
                "journal_size_limit": spool_module.JOURNAL_SIZE_LIMIT,
            }
        finally:
            await spool.close()
        # WAL is a property of the file: any later connection sees it.
        other = sqlite3.connect(tmp_path / "spool-0.db")
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()

    run(scenario)


def test_open_fsyncs_the_directory_once_the_files_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "spool"
    synced: list[tuple[int, bool, bool]] = []  # inode, is a directory, the WAL existed
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        info = os.fstat(fd)
        wal = directory / "spool-0.db-wal"
        synced.append((info.st_ino, stat.S_ISDIR(info.st_mode), wal.exists()))
        fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", recording_fsync)

    async def scenario() -> None:
        spool = await Spool.open(directory, BIG)
        await spool.close()

    run(scenario)
    assert (os.stat(directory).st_ino, True, True) in synced, synced


def test_open_reports_an_unusable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")

    async def scenario() -> None:
        with pytest.raises(SpoolError):
            await Spool.open(blocker / "spool", BIG)

    run(scenario)


def test_open_refuses_an_unknown_schema_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "spool-0.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()

    async def scenario() -> None:
        with pytest.raises(SpoolError, match="schema version 99"):
            await Spool.open(tmp_path, BIG)
        # The failed open released its lock.
        with pytest.raises(SpoolError, match="schema version 99"):
            await Spool.open(tmp_path, BIG)

    run(scenario)


header_names = st.text(max_size=20)
header_values = st.binary(max_size=50)


@given(st.lists(st.tuples(header_names, header_values), max_size=8))
def test_header_encoding_is_lossless(headers: list[tuple[str, bytes]]) -> None:
    assert _decode_headers(_encode_headers(tuple(headers))) == tuple(headers)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.builds(
            Record,
            topic=st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
            key=st.none() | st.binary(max_size=30),
            value=st.binary(max_size=300),
            headers=st.lists(st.tuples(header_names, header_values), max_size=4).map(tuple),
            timestamp_ms=st.integers(-(2**63), 2**63 - 1),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_any_records_round_trip_through_the_file(
    tmp_path_factory: pytest.TempPathFactory, records: list[Record]
) -> None:
    directory = tmp_path_factory.mktemp("spool")

    async def scenario() -> list[Record]:
        spool = await Spool.open(directory, BIG)
        for rec in records:
            await spool.append(rec)
        await spool.close()
        spool = await Spool.open(directory, BIG)
        try:
            return [rec for _, rec in await everything(spool)]
        finally:
            await spool.close()

    assert run(scenario) == records


def test_a_cancelled_append_is_still_committed_and_accounted(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            task = asyncio.create_task(spool.append(record(0)))
            await asyncio.sleep(0)  # queued
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await spool.append(record(1))
            # At-least-once: the cancelled request was not answered, but its record is kept.
            assert [rec for _, rec in await everything(spool)] == [record(0), record(1)]
            assert spool._pending_bytes == 0
        finally:
            await spool.close()

    run(scenario)


def test_a_cancelled_open_releases_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the writer thread holds the lock but before ``open`` returned: the
    cancelled open must stop that thread and drop the lock. The writer is held at exactly that
    point (lock taken, file opened, stats not yet handed back), so the order is fixed."""
    locked, release = threading.Event(), threading.Event()
    opened: list[Spool] = []
    setup = Spool._setup

    def held_setup(self: Spool) -> None:
        setup(self)
        opened.append(self)
        locked.set()
        assert release.wait(30)

    monkeypatch.setattr(Spool, "_setup", held_setup)

    async def scenario() -> None:
        opening = asyncio.create_task(Spool.open(tmp_path, BIG))
        while not locked.is_set():
            await asyncio.sleep(0.001)
        opening.cancel()
        await asyncio.sleep(0)  # the cancellation reaches open, which starts closing
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await opening
        opened[0]._thread.join(5)
        assert not opened[0]._thread.is_alive(), "the cancelled open left its writer running"
        monkeypatch.setattr(Spool, "_setup", setup)
        spool = await Spool.open(tmp_path, BIG)  # SpoolLocked if the lock were still held
        await spool.close()

    run(scenario)
