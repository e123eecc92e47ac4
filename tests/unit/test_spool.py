"""The spool against real files in tmp_path: order, exactness, limits, grouping, locking,
segments, torn tails, the conversion of a SQLite spool, and a power-loss simulation.

Power loss is simulated where the format allows it: ``fdatasync``/``fsync`` of files and
directories are wrapped to snapshot what each call made durable (a file's bytes, a directory's
entries); a "disk after power loss" is then rebuilt from those snapshots plus any part of the
writes that were not flushed yet, and every append acknowledged before the cut must read back
from it. What is not proven: that the disk honours fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.publish import segments
from hookd.publish import spool as spool_module
from hookd.publish.segments import SpoolFiles, _decode_headers, _encode_headers
from hookd.publish.spool import Spool, SpoolClosed, SpoolError, SpoolFull, SpoolLocked
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


async def on_reopen(path: Path, max_bytes: int = BIG) -> list[Record]:
    """What a fresh open of the spool at ``path`` finds to forward, in order (closed again)."""
    spool = await Spool.open(path, max_bytes)
    try:
        return [rec for _, rec in await everything(spool)]
    finally:
        await spool.close()


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
    [(base, _)] = segments.segments(tmp_path / "spool" / "spool-0")
    assert base == 0


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
            assert spool.size_bytes == full_size  # on disk until its segment is removed
            assert spool.oldest_timestamp_ms == record(3).timestamp_ms
            # A retried delete (the forwarder crashed before noticing) and unknown ids are no-ops.
            await spool.delete([rows[0][0], 999_999])
            assert spool.depth == 7
            await spool.delete([row_id for row_id, _ in remaining])
            assert await everything(spool) == []
            assert (spool.depth, spool.oldest_timestamp_ms) == (0, None)
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
            assert spool.size_bytes == 3 * one  # one segment per record at this size
            assert len(segments.segments(spool.path)) == 3
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
            assert "spool-0.lock" in str(refused.value)
            other_worker = await Spool.open(tmp_path, BIG, worker_index=1)
            await other_worker.append(record(1))
            await other_worker.close()
            assert other_worker.path.name == "spool-1"
            await first.append(record(0))
        finally:
            await first.close()
        again = await Spool.open(tmp_path, BIG)
        try:
            assert [rec for _, rec in await everything(again)] == [record(0)]
        finally:
            await again.close()

    run(scenario)


def _recording_groups(spool: Spool) -> list[list[str]]:
    """The groups the writer processes, each as it woke for it: "appends" for a gathered list
    of appends, else the operation's class name."""
    groups: list[list[str]] = []
    process = spool._process

    def recorded(ops: list[object], appends: list[object]) -> object:
        groups.append(["appends" if isinstance(op, list) else type(op).__name__ for op in ops])
        return process(ops, appends)  # type: ignore[arg-type]

    spool._process = recorded  # type: ignore[method-assign, assignment]
    return groups


def test_a_head_note_made_while_appends_gather_rides_with_them(tmp_path: Path) -> None:
    async def first() -> list[list[str]]:
        spool = await Spool.open(tmp_path, BIG)
        await asyncio.gather(*(spool.append(record(i)) for i in range(5)))
        forwarded = await everything(spool)
        groups = _recording_groups(spool)
        gathering = [spool.append(record(i)) for i in range(5, 8)]  # waiting out GATHER_S
        await spool.delete([seq for seq, _ in forwarded])  # its note waits for them
        await asyncio.gather(*gathering)
        await spool.close()
        return groups

    # One wake-up of the writer for both: the gathered appends, then the note.
    assert run(first)[0] == ["appends", "_Commit"]
    assert run(lambda: on_reopen(tmp_path)) == [record(i) for i in range(5, 8)]  # on disk


def test_a_mebibyte_of_appends_is_handed_over_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            small = spool.append(record(0))
            assert len(spool._gathering) == 1  # waits out GATHER_S
            large = spool.append(record(1, size=spool_module.HAND_OVER_BYTES))
            assert spool._gathering == [] and spool._hand_over_at is None  # handed over now
            await asyncio.gather(small, large)
            assert [rec for _, rec in await everything(spool)] == [
                record(0),
                record(1, size=spool_module.HAND_OVER_BYTES),
            ]
        finally:
            await spool.close()

    run(scenario)


def test_a_record_the_format_cannot_hold_fails_its_future_not_the_caller(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            unholdable = Record("t" * 70_000, None, b"x", (), 0)  # topic length is a u16
            appended = spool.append(unholdable)  # raises nothing here
            with pytest.raises(Exception, match="format"):
                await appended
            await spool.append(record(0))  # the spool goes on
            assert spool.depth == 1
        finally:
            await spool.close()

    run(scenario)


def test_close_waits_for_queued_writes_and_is_idempotent(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        appends = [spool.append(record(i)) for i in range(300)]  # queued, none committed yet
        await asyncio.gather(spool.close(), spool.close())
        await asyncio.gather(*appends)  # all succeeded: close drained the queue first
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


def test_a_failed_write_fails_its_appends_and_the_spool_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush that fails (a full or failing disk) fails the waiting appends promptly, cuts
    their bytes back off the segment, and later appends work."""
    spool_dir = tmp_path / "spool-0"
    real = os.fdatasync
    failing = threading.Event()

    def flaky_fdatasync(fd: int) -> None:
        if failing.is_set():
            failing.clear()
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(segments.os, "fdatasync", flaky_fdatasync)

    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            await spool.append(record(0))
            size = spool.size_bytes
            failing.set()
            results = await asyncio.gather(
                *(spool.append(record(i)) for i in (1, 2, 3)), return_exceptions=True
            )
            assert all(isinstance(r, SpoolError) for r in results), results
            assert isinstance(results[0].__cause__, OSError)
            assert spool.depth == 1
            assert spool.size_bytes == size
            [(_, path)] = segments.segments(spool_dir)
            assert path.stat().st_size == size  # the failed group's bytes are gone
            assert spool._pending_bytes == 0  # SpoolFull accounting released them
            await spool.append(record(4))
            assert [rec for _, rec in await everything(spool)] == [record(0), record(4)]
        finally:
            await spool.close()
        reopened = await Spool.open(tmp_path, BIG)
        try:
            assert [rec for _, rec in await everything(reopened)] == [record(0), record(4)]
        finally:
            await reopened.close()

    run(scenario)


def test_a_failed_write_that_cannot_be_undone_stops_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If even cutting the failed group back fails, nothing more is acknowledged: the group
    and every later call fail with SpoolError instead of hanging or lying."""
    real = os.fdatasync
    broken = threading.Event()

    def fdatasync(fd: int) -> None:
        if broken.is_set():
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(segments.os, "fdatasync", fdatasync)

    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        await spool.append(record(0))
        broken.set()
        with pytest.raises(SpoolError):
            await spool.append(record(1))
        broken.clear()
        for i in (2, 3):  # queued before the writer's stop reached the loop, and after
            with pytest.raises(SpoolError, match="no more records"):
                await spool.append(record(i))
        await spool.close()
        reopened = await Spool.open(tmp_path, BIG)
        try:
            assert [rec for _, rec in await everything(reopened)] == [record(0)]
        finally:
            await reopened.close()

    run(scenario)


def test_forwarded_segments_are_removed_so_the_spool_stays_within_max_bytes(
    tmp_path: Path,
) -> None:
    """Far more bytes than ``max_bytes`` pass through a spool whose forwarder keeps up."""
    max_bytes = 256 * 1024

    async def scenario() -> None:
        spool = await Spool.open(tmp_path, max_bytes)
        try:
            for round_ in range(40):  # ~4 MB through a 256 KiB spool
                await asyncio.gather(
                    *(spool.append(record(round_ * 100 + i, size=1000)) for i in range(100))
                )
                rows = await everything(spool)
                assert rows[0][1] == record(round_ * 100, size=1000)
                await spool.delete([seq for seq, _ in rows])
                assert spool.size_bytes <= max_bytes
            on_disk = sum(path.stat().st_size for _, path in segments.segments(spool.path))
            assert on_disk == spool.size_bytes
            assert on_disk <= segments.segment_bytes_for(max_bytes) + 1100
        finally:
            await spool.close()

    run(scenario)


def test_a_torn_tail_is_cut_and_appends_go_on_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def write(records: list[Record]) -> None:
        spool = await Spool.open(tmp_path, BIG)
        for rec in records:
            await spool.append(rec)
        await spool.close()

    run(lambda: write([record(i) for i in range(5)]))
    [(_, path)] = segments.segments(tmp_path / "spool-0")
    whole = path.read_bytes()
    # A frame cut short: the start of the next frame, as a crash mid-write leaves it.
    torn = segments.frame_head(segments.encode_meta(5, record(5)), record(5).value)[:30]
    path.write_bytes(whole + torn)
    assert run(lambda: on_reopen(tmp_path)) == [record(i) for i in range(5)]
    assert "torn tail of 30 bytes" in caplog.text
    assert path.read_bytes() == whole  # cut back

    # A whole frame with a bad CRC (a write that reached the disk in part) is torn too.
    frame = bytearray(segments.frame_head(segments.encode_meta(5, record(5)), b"x" * 100))
    frame += b"x" * 99 + b"y"
    path.write_bytes(whole + bytes(frame))
    run(lambda: write([record(6)]))
    assert run(lambda: on_reopen(tmp_path)) == [record(i) for i in (0, 1, 2, 3, 4, 6)]


def test_records_beyond_memory_are_read_back_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "MEMORY_BYTES", 5_000)

    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            await asyncio.gather(*(spool.append(record(i, size=1000)) for i in range(20)))
            held = [entry.record is not None for entry in spool._entries.values()]
            assert held[:4] == [True] * 4 and not any(held[5:])
            rows = await spool.oldest(20)
            assert [rec for _, rec in rows] == [record(i, size=1000) for i in range(20)]
            await spool.delete([seq for seq, _ in rows[:10]])
            assert [rec for _, rec in await spool.oldest(3)] == [
                record(i, size=1000) for i in (10, 11, 12)
            ]
        finally:
            await spool.close()

    run(scenario)


def test_forwarded_records_are_not_forwarded_again_after_a_restart(tmp_path: Path) -> None:
    async def first() -> None:
        spool = await Spool.open(tmp_path, BIG)
        await asyncio.gather(*(spool.append(record(i)) for i in range(10)))
        rows = await everything(spool)
        await spool.delete([seq for seq, _ in rows[:4]])  # the head: noted on disk
        await spool.delete([rows[6][0]])  # a hole after the head: not noted
        await spool.close()

    run(first)
    # At-least-once: record 6 is forwarded again; 0-3 are not.
    assert run(lambda: on_reopen(tmp_path)) == [record(i) for i in range(4, 10)]


def test_open_reports_an_unusable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")

    async def scenario() -> None:
        with pytest.raises(SpoolError):
            await Spool.open(blocker / "spool", BIG)

    run(scenario)


_SQLITE_SPOOL = """
CREATE TABLE spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB,
    value BLOB NOT NULL, headers BLOB NOT NULL, timestamp_ms INTEGER NOT NULL,
    size INTEGER NOT NULL);
CREATE TABLE dead_letter (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, key BLOB,
    value BLOB NOT NULL, headers BLOB NOT NULL, timestamp_ms INTEGER NOT NULL,
    size INTEGER NOT NULL, reason TEXT NOT NULL, set_aside_ms INTEGER NOT NULL);
PRAGMA user_version=2;
"""


def test_a_sqlite_spool_from_an_earlier_version_is_converted(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "spool-0.db")
    db.executescript(_SQLITE_SPOOL)
    for rec in ODD_RECORDS:
        row = (rec.topic, rec.key, rec.value, _encode_headers(rec.headers), rec.timestamp_ms, 1)
        db.execute(
            "INSERT INTO spool (topic, key, value, headers, timestamp_ms, size) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
    poison = record(7)
    db.execute(
        "INSERT INTO dead_letter VALUES (7, ?, ?, ?, ?, ?, 1, 'too large', 0)",
        (poison.topic, poison.key, poison.value, _encode_headers(poison.headers), 7),
    )
    db.commit()
    db.close()
    assert segments.spool_indexes(tmp_path) == [0]

    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            assert [rec for _, rec in await everything(spool)] == ODD_RECORDS
            assert spool.dead_letters == 1
            await spool.append(record(1))
        finally:
            await spool.close()
        [dead] = segments.dead_letters(tmp_path / "spool-0")
        assert (dead.record.value, dead.reason) == (poison.value, "too large")
        spool = await Spool.open(tmp_path, BIG)  # converted once, not twice
        try:
            assert [rec for _, rec in await everything(spool)] == [*ODD_RECORDS, record(1)]
        finally:
            await spool.close()

    run(scenario)
    assert not (tmp_path / "spool-0.db").exists()


def test_an_unreadable_sqlite_spool_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "spool-0.db").write_bytes(b"not a database" * 100)

    async def scenario() -> None:
        with pytest.raises(SpoolError, match="cannot read the SQLite spool"):
            await Spool.open(tmp_path, BIG)
        # The failed open released its lock: the same error, not SpoolLocked.
        with pytest.raises(SpoolError, match="cannot read the SQLite spool"):
            await Spool.open(tmp_path, BIG)

    run(scenario)
    assert (tmp_path / "spool-0.db").exists()


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
        return await on_reopen(directory)

    assert run(scenario) == records


def test_a_cancelled_append_is_still_committed_and_accounted(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = await Spool.open(tmp_path, BIG)
        try:
            appended = spool.append(record(0))  # queued
            appended.cancel()
            with pytest.raises(asyncio.CancelledError):
                await appended
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
    point (lock taken, log recovered, records not yet handed back), so the order is fixed."""
    locked, release = threading.Event(), threading.Event()
    recover = SpoolFiles.recover

    def held_recover(self: SpoolFiles) -> list[segments.Frame]:
        frames = recover(self)
        locked.set()
        assert release.wait(30)
        return frames

    monkeypatch.setattr(SpoolFiles, "recover", held_recover)
    threads_before = set(threading.enumerate())

    async def scenario() -> None:
        opening = asyncio.create_task(Spool.open(tmp_path, BIG))
        while not locked.is_set():
            await asyncio.sleep(0.001)
        [writer] = [t for t in set(threading.enumerate()) - threads_before if "spool" in t.name]
        opening.cancel()
        await asyncio.sleep(0)  # the cancellation reaches open, which starts closing
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await opening
        writer.join(5)
        assert not writer.is_alive(), "the cancelled open left its writer running"
        monkeypatch.setattr(SpoolFiles, "recover", recover)
        spool = await Spool.open(tmp_path, BIG)  # SpoolLocked if the lock were still held
        await spool.close()

    run(scenario)


class FlushRecorder:
    """Wraps ``fsync``/``fdatasync`` to note what each call made durable: a file's bytes, a
    directory's entries. The rest of what is on disk now might not survive a power loss."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.dirs: dict[str, set[str]] = {}
        self._fsync, self._fdatasync = os.fsync, os.fdatasync

    def _note(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            entries = set(os.listdir(path))
            with self._lock:
                self.dirs[path] = entries
        else:
            data = Path(path).read_bytes()
            with self._lock:
                self.files[path] = data

    def fsync(self, fd: int) -> None:
        self._fsync(fd)
        self._note(fd)

    def fdatasync(self, fd: int) -> None:
        self._fdatasync(fd)
        self._note(fd)

    def image(self, root: Path) -> tuple[dict[str, bytes], dict[str, set[str]], dict[str, bytes]]:
        """(durable file bytes, durable directory entries, every file's bytes now)."""
        with self._lock:
            files, dirs = dict(self.files), {k: set(v) for k, v in self.dirs.items()}
        now: dict[str, bytes] = {}
        for path in root.rglob("*"):
            if path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    now[str(path)] = path.read_bytes()
        return files, dirs, now


def after_power_loss(
    image: tuple[dict[str, bytes], dict[str, set[str]], dict[str, bytes]],
    root: Path,
    target: Path,
    rng: random.Random,
) -> None:
    """Build in ``target`` a disk ``root`` may have left: an entry exists only if its directory
    was flushed with it; a file holds what was flushed plus any prefix of what was written
    after, possibly with a garbled byte (a page half written)."""
    durable, dirs, now = image
    for path in sorted(set(durable) | set(now)):
        relative = Path(path).relative_to(root)
        parents_durable = all(
            part in dirs.get(str(root.joinpath(*relative.parts[:depth])), set())
            for depth, part in enumerate(relative.parts)
        )
        if not parents_durable:
            continue
        flushed, written = durable.get(path, b""), now.get(path)
        data = flushed
        if written is not None and written.startswith(flushed):
            extra = bytearray(written[len(flushed) : len(flushed) + rng.randint(0, 3000)])
            if extra and rng.random() < 0.5:
                extra[rng.randrange(len(extra))] ^= 0xFF
            data = flushed + bytes(extra)
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_bytes(data)


def test_power_loss_at_any_moment_keeps_every_acknowledged_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends in flight, segments rolling and removed, the head noted: at several moments
    the disk a power loss could leave is rebuilt, many ways, and every append acknowledged by
    then reads back from it, exactly and in order."""
    recorder = FlushRecorder()
    monkeypatch.setattr(segments.os, "fsync", recorder.fsync)
    monkeypatch.setattr(segments.os, "fdatasync", recorder.fdatasync)
    live = tmp_path / "live"
    images: list[tuple[set[int], tuple[dict[str, bytes], dict[str, set[str]], dict[str, bytes]]]]
    images = []
    forwarded: set[int] = set()

    async def scenario() -> None:
        spool = await Spool.open(live, 400_000)  # 25 kB segments: several roll and go
        acked: set[int] = set()

        async def one(i: int) -> None:
            await spool.append(record(i, size=700))
            acked.add(i)

        tasks = []
        for i in range(300):
            tasks.append(asyncio.create_task(one(i)))
            if i % 7 == 6:
                await asyncio.sleep(0.001)
            if i in (120, 240):
                rows = await spool.oldest(100)
                await spool.delete([seq for seq, _ in rows])
                forwarded.update(int(rec.value.split(b":")[0]) for _, rec in rows)
            if i % 40 == 39:
                images.append((acked - forwarded, recorder.image(live)))  # appends in flight
        await asyncio.gather(*tasks)
        images.append((acked - forwarded, recorder.image(live)))
        await spool.close()

    run(scenario)
    # Every append was acknowledged by the end; the forwarder took some mid-way (how many
    # depends on how the gather window grouped them), so segments were removed meanwhile.
    assert len(images) == 8 and images[-1][0] | forwarded == set(range(300))
    assert 0 < len(forwarded) <= 200
    for number, (acked, image) in enumerate(images):
        for seed in range(6):
            target = tmp_path / f"crash-{number}-{seed}"
            after_power_loss(image, live, target, random.Random(seed))
            got = run(lambda target=target: on_reopen(target, 400_000))
            indexes = [int(rec.value.split(b":")[0]) for rec in got]
            assert got == [record(i, size=700) for i in indexes]  # nothing garbled
            assert indexes == sorted(indexes)
            missing = acked - set(indexes)  # acknowledged and not forwarded, yet lost
            assert not missing, (number, seed, sorted(missing)[:10])


def _mode(path: Path) -> int:
    return os.lstat(path).st_mode & 0o777


def test_spool_files_are_private_to_hookds_user(tmp_path: Path) -> None:
    """Webhook bodies are not for every local user to read."""

    async def scenario() -> None:
        spool = await Spool.open(tmp_path / "spool", BIG)
        try:
            await spool.append(record(0))
            await spool.append(record(1))
            rows = await everything(spool)
            await spool.delete([rows[0][0]])
            await spool.set_aside([rows[1][0]], "refused")
        finally:
            await spool.close()

    run(scenario)
    log_dir = tmp_path / "spool" / "spool-0"
    files = [tmp_path / "spool" / "spool-0.lock", *log_dir.iterdir(), *(log_dir / "dead").iterdir()]
    modes = {path.name: _mode(path) for path in files}
    assert {m for name, m in modes.items() if name != "dead"} == {0o600}, modes
    assert _mode(tmp_path / "spool") == _mode(log_dir) == _mode(log_dir / "dead") == 0o700


def test_a_planted_symbolic_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "spool-0.lock").symlink_to(victim)

    async def scenario() -> None:
        with pytest.raises(SpoolError, match=r"spool-0\.lock"):
            await Spool.open(spool_dir, BIG)

    run(scenario)
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("target", ["segment", "directory", "dead letter"])
def test_a_spool_other_users_can_write_is_refused(tmp_path: Path, target: str) -> None:
    """Its records would be forwarded as verified events: hookd must have written them."""

    async def fill() -> None:
        spool = await Spool.open(tmp_path, BIG)
        await spool.append(record(0))
        await spool.append(record(1))
        await spool.set_aside([(await everything(spool))[1][0]], "refused")
        await spool.close()

    async def reopen() -> None:
        spool = await Spool.open(tmp_path, BIG)
        await spool.close()

    run(fill)
    log_dir = tmp_path / "spool-0"
    path = {
        "segment": segments.segments(log_dir)[0][1],
        "directory": log_dir,
        "dead letter": next((log_dir / "dead").iterdir()),
    }[target]
    os.chmod(path, 0o777 if target == "directory" else 0o666)
    with pytest.raises(SpoolError, match="writable by other users"):
        run(reopen)
    os.chmod(path, 0o700 if target == "directory" else 0o600)
    run(reopen)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_spool_file_of_another_user_is_refused(tmp_path: Path) -> None:
    async def fill() -> None:
        spool = await Spool.open(tmp_path, BIG)
        await spool.append(record(0))
        await spool.close()

    async def reopen() -> None:
        spool = await Spool.open(tmp_path, BIG)
        await spool.close()

    run(fill)
    [(_, segment)] = segments.segments(tmp_path / "spool-0")
    os.chown(segment, 4242, -1)
    with pytest.raises(SpoolError, match="belongs to uid 4242"):
        run(reopen)


def test_spool_files_readable_by_others_are_made_private(tmp_path: Path) -> None:
    """Earlier versions created spool files 0644; opening tightens them."""

    async def cycle() -> None:
        spool = await Spool.open(tmp_path, BIG)
        await spool.append(record(0))
        await spool.close()

    run(cycle)
    [(_, segment)] = segments.segments(tmp_path / "spool-0")
    os.chmod(segment, 0o644)
    run(cycle)
    assert _mode(segment) == 0o600
