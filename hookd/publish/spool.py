"""The local durable outbox: records written and fdatasynced before hookd answers 2xx.

A route with ``ack = "spool"`` (or any route while Kafka cannot ack, with ``fallback =
"spool"``) awaits the future :meth:`Spool.append` returns; once it resolves, the record is in
the spool's log (:mod:`hookd.publish.segments`: format and crash safety) and survives
``kill -9`` and power loss. The forwarder takes records with :meth:`Spool.oldest` -- from
memory while this process still holds them (up to :data:`MEMORY_BYTES`), from disk for what an
earlier process left or what did not fit -- and releases them with :meth:`Spool.delete` only
after the broker's ack, so every record reaches Kafka at least once.

Why a log and not SQLite (which the spool was before; measured with ``make bench``): SQLite
wrote each byte three times -- the WAL frame, the checkpoint into the database, the freed pages
after the delete -- and the forwarder read every record back. Here a record is written once,
forwarded from memory, and a finished segment is removed with one ``unlink``.

Threading and group commit. All disk work runs on ONE writer thread per spool; the event loop
only encodes the record's small metadata, gathers the appends of :data:`GATHER_S` and hands
them over as one queue entry (each wake-up of the writer costs a GIL hand-off), and awaits a
future. The writer takes everything that queued while it was busy (up to :data:`MAX_GROUP`
operations or :data:`MAX_GROUP_BYTES`), writes it with ``writev`` (the body is never copied in
user space) and makes it durable with one ``fdatasync``: one disk flush for many appends. Each
processed group is handed back to the loop with ONE ``call_soon_threadsafe``. A failed write
fails every future of its group with :class:`SpoolError` (the request answers 503); if it
cannot be undone, the writer stops and every later call fails -- a request is never left
hanging and never acknowledged on a write that did not reach the disk.

Size. ``max_bytes`` bounds the bytes the segment files hold, counting appends still queued: the
records not yet forwarded, plus forwarded ones whose segment is not removed yet (about one
segment, see :func:`segment_bytes_for`, once the forwarder keeps up). A record the forwarder
cannot deliver for a while keeps its segment, and the ones after it, on disk.

Processes. One :class:`Spool` per worker index, each with its own lock, directory and writer.
After the worker count shrinks, spools of indexes no worker has any more are adopted:
:func:`spool_indexes` lists them, a worker opens one (the lock decides who), forwards it and
closes it with ``remove_if_empty``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hookd.publish.segments import (
    FRAME_HEAD_BYTES,
    Frame,
    SpoolClosed,
    SpoolError,
    SpoolFiles,
    SpoolFull,
    SpoolLocked,
    count_dead_letters,
    decode_payload,
    encode_meta,
)
from hookd.record import Record

__all__ = ["Spool", "SpoolClosed", "SpoolError", "SpoolFull", "SpoolLocked"]

#: Most operations in one group: bounds one flush's latency and the group's memory.
MAX_GROUP: Final = 1024
#: Stop adding appends to a group once it holds this many bytes.
MAX_GROUP_BYTES: Final = 16 * 1024 * 1024
#: How long the loop gathers appends before handing them to the writer as one group, which
#: costs one wake-up of the writer (a GIL hand-off with the loop) and one ``fdatasync``, however
#: many appends it carries. Both are paid per group, so the window sets the spool's CPU per
#: request under load: too short and every request pays a flush of its own. 3 ms is what a
#: spooled answer may wait on top of its flush; the producer's ``linger_ms`` makes a direct
#: delivery wait the same way.
GATHER_S: Final = 0.003
#: Hand over at once when the gathered appends reach this many bytes: a flush is cheap next to
#: writing this much, and large bodies should not wait out the window.
HAND_OVER_BYTES: Final = 1024 * 1024
#: Records kept in memory for the forwarder, per spool (at most ``max_bytes``).
MEMORY_BYTES: Final = 64 * 1024 * 1024
#: What one :meth:`Spool.oldest` returns at most, in frame bytes (at least one record).
READ_BYTES: Final = 16 * 1024 * 1024


@dataclass(slots=True)
class _Entry:
    """A record not yet forwarded: where it lies, and the record itself while it is held."""

    seq: int
    segment: int
    position: int
    length: int
    timestamp_ms: int
    record: Record | None


@dataclass(slots=True)
class _Append:
    seq: int
    meta: bytes
    value: bytes
    length: int
    record: Record
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Read:
    entries: tuple[_Entry, ...]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Commit:
    head: int
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _SetAside:
    items: tuple[tuple[int, Record], ...]
    reason: str
    future: asyncio.Future[Any]


class _Stop:
    """Queue sentinel: everything queued before it is processed, then the writer exits."""


_STOP: Final = _Stop()
_Work = list[_Append] | _Read | _Commit | _SetAside
_Op = _Work | _Stop
_Outcome = tuple[asyncio.Future[Any], object, BaseException | None]
_Stats = tuple[int, int]  # disk bytes, groups flushed


class Spool:
    """A durable FIFO of records in a segment log, written by one thread with group commit.

    Create it with :meth:`open` inside the event loop that will use it; every method must be
    called from that loop. ``depth``, ``size_bytes``, ``oldest_timestamp_ms`` and ``commits``
    are kept in memory and cost nothing to read (metrics, readiness).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, directory: Path, max_bytes: int, worker_index: int
    ) -> None:
        """Use :meth:`open`; the constructor starts nothing."""
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if worker_index < 0:
            raise ValueError(f"worker_index must be >= 0, not {worker_index}")
        self._loop = loop
        self._files = SpoolFiles(directory, worker_index, max_bytes)
        self.directory = directory
        self.path = self._files.log_dir
        self.max_bytes = max_bytes
        self._memory_bytes = min(MEMORY_BYTES, max_bytes)
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        # Loop-side state: only the loop thread reads or writes these.
        self._entries: dict[int, _Entry] = {}  # by seq, oldest first
        self._next_seq = 0  # for the next append
        self._written_to = 0  # every append below it is written (or failed)
        self._committed_head = 0
        self._held_bytes = 0
        self._pending_bytes = 0  # accepted appends not written yet
        self._gathering: list[_Append] = []  # appends not handed to the writer yet
        self._gathered_bytes = 0
        self._riders: list[_Commit] = []  # head notes that go with the gathered appends
        self._hand_over_at: asyncio.TimerHandle | None = None
        self._stats: _Stats = (0, 0)
        self._closing = False
        self._remove_if_empty = False
        self._dead: BaseException | None = None
        self._ready: asyncio.Future[list[Frame]] = loop.create_future()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, name=f"hookd-spool-{worker_index}", daemon=True
        )

    # -- loop side ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, max_bytes: int, worker_index: int = 0) -> Spool:
        """Open (creating what is missing) worker ``worker_index``'s spool under ``path``.

        Whatever a crash left is recovered (see the module docstring). Raises
        :class:`SpoolLocked` when another process holds it, :class:`SpoolError` when it cannot
        be opened. Runs on the writer thread: the loop never waits on the disk.
        """
        spool = cls(asyncio.get_running_loop(), Path(path), max_bytes, worker_index)
        spool._thread.start()
        try:
            frames = await spool._ready
        except BaseException:
            await spool.close()  # a failed or cancelled open leaves no thread or lock behind
            raise
        spool._adopt_frames(frames)
        return spool

    def _adopt_frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            seq, record = decode_payload(frame.payload)
            self._index(seq, frame.segment, frame.position, frame.length, record)
        self._next_seq = self._written_to = self._files.next_seq
        self._committed_head = next(iter(self._entries), self._next_seq)

    def _index(self, seq: int, segment: int, position: int, length: int, record: Record) -> None:
        """Note a record on disk; keep it in memory for the forwarder while the budget allows."""
        held = self._held_bytes + length <= self._memory_bytes
        if held:
            self._held_bytes += length
        entry = _Entry(
            seq, segment, position, length, record.timestamp_ms, record if held else None
        )
        self._entries[seq] = entry

    @property
    def depth(self) -> int:
        """Records not yet forwarded."""
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes the segment files hold (what ``max_bytes`` bounds)."""
        return self._stats[0]

    @property
    def oldest_timestamp_ms(self) -> int | None:
        """Timestamp of the record the forwarder sends next; ``None`` if empty.

        Records arrive in receive-time order, so this is how far behind the forwarder is.
        """
        for entry in self._entries.values():
            return entry.timestamp_ms
        return None

    @property
    def dead_letters(self) -> int:
        """Records set aside because the broker refused them for good, counted on disk
        (``hookd spool requeue`` takes them back while hookd runs)."""
        return count_dead_letters(self.path)

    @property
    def commits(self) -> int:
        """Groups flushed since open: each is one fdatasync, however many appends it carried.
        ``appends / commits`` is the group-commit factor."""
        return self._stats[1]

    def append(self, record: Record) -> asyncio.Future[None]:
        """A future that resolves once ``record`` is written and fdatasync'd. A future, not a
        coroutine: a request awaits its append without a task of its own.

        It fails with :class:`SpoolFull` (nothing written) when the record would take the
        spool beyond ``max_bytes``, counting appends still in flight, and with
        :class:`SpoolError` when the spool is closed or the write failed. If it is cancelled,
        the record may still be written and forwarded (at-least-once, never
        lost-but-acknowledged).
        """
        future: asyncio.Future[None] = self._loop.create_future()
        seq = self._next_seq
        try:
            self._check_open()
            meta = encode_meta(seq, record)
            length = FRAME_HEAD_BYTES + len(meta) + len(record.value)
            used = self._stats[0] + self._pending_bytes
            if used + length > self.max_bytes:
                raise SpoolFull(
                    f"spool {self.path} is full: {used} of {self.max_bytes} bytes used, "
                    f"record needs {length}"
                )
        except Exception as exc:  # closed, full, or a record the format cannot hold
            future.set_exception(exc)  # the awaiting request answers; nothing raises at it
            return future
        self._next_seq = seq + 1
        self._pending_bytes += length
        self._gathering.append(_Append(seq, meta, record.value, length, record, future))
        self._gathered_bytes += length
        if self._gathered_bytes >= HAND_OVER_BYTES:
            self._hand_over()
        elif self._hand_over_at is None:
            self._hand_over_at = self._loop.call_later(GATHER_S, self._hand_over)
        return future

    def _hand_over(self) -> None:
        """Give the gathered appends (one queue entry) and the head notes riding with them to
        the writer, which wakes once for all of them."""
        if self._hand_over_at is not None:
            self._hand_over_at.cancel()
            self._hand_over_at = None
        if self._gathering:
            self._queue.put(self._gathering)
            self._gathering = []
            self._gathered_bytes = 0
        for commit in self._riders:  # queued before the writer holds the GIL: one wake-up
            self._queue.put(commit)
        self._riders = []

    async def oldest(self, limit: int, max_bytes: int = READ_BYTES) -> list[tuple[int, Record]]:
        """Up to ``limit`` records not yet forwarded (at most ``max_bytes`` of frames, at least
        one), oldest first, with their sequence numbers. Held records cost no disk read."""
        self._check_open()
        batch: list[_Entry] = []
        total = 0
        for entry in self._entries.values():
            if len(batch) >= limit or (batch and total + entry.length > max_bytes):
                break
            batch.append(entry)
            total += entry.length
        return await self._records(batch)

    async def delete(self, seqs: Sequence[int]) -> None:
        """Release these records: the broker acknowledged them. Unknown ones are ignored.

        The new head is noted on disk (without fsync) before this returns; a note lost to a
        crash only makes the next process forward these again."""
        self._check_open()
        self._release(seqs)
        await self._commit_head()

    async def set_aside(self, seqs: Sequence[int], reason: str) -> None:
        """Write these records as dead letters, with why (the broker refused them for good),
        then release them: the records behind them must go on."""
        self._check_open()
        batch = {seq for seq in seqs if seq in self._entries}
        if not batch:
            return
        entries = [self._entries[seq] for seq in sorted(batch)]
        items = await self._records(entries)
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(_SetAside(tuple(items), reason, future))
        await future
        self._release(batch)
        await self._commit_head()

    async def _records(self, entries: Sequence[_Entry]) -> list[tuple[int, Record]]:
        """``(seq, record)`` for these entries: held ones as they are, the rest read from disk
        in one trip to the writer."""
        missing = tuple(entry for entry in entries if entry.record is None)
        read: dict[int, Record] = {}
        if missing:
            future: asyncio.Future[dict[int, Record]] = self._loop.create_future()
            self._queue.put(_Read(missing, future))
            read = await future
        return [(e.seq, e.record if e.record is not None else read[e.seq]) for e in entries]

    def _release(self, seqs: Sequence[int] | set[int]) -> None:
        for seq in seqs:
            entry = self._entries.pop(seq, None)
            if entry is None:
                continue
            if entry.record is not None:
                self._held_bytes -= entry.length

    async def _commit_head(self) -> None:
        head = next(iter(self._entries), self._written_to)
        if head <= self._committed_head:
            return
        self._committed_head = head
        future: asyncio.Future[None] = self._loop.create_future()
        if self._gathering:
            # Appends are handed over within GATHER_S: the note rides with them, and the
            # writer wakes once for both (under load, half its wake-ups were these notes).
            self._riders.append(_Commit(head, future))
        else:
            self._queue.put(_Commit(head, future))
        await future

    async def close(self, *, remove_if_empty: bool = False) -> None:
        """Finish every queued operation, close the files, release the lock, stop the thread.

        ``remove_if_empty``: delete the log too when no record (and no dead letter) is left,
        before the lock is released -- for a spool no worker index owns any more.
        Idempotent: later calls wait for the same shutdown. Calls made after ``close`` began
        raise :class:`SpoolClosed`.
        """
        if not self._closing:
            self._closing = True
            self._remove_if_empty = remove_if_empty and not self._entries
            self._hand_over()
            self._queue.put(_STOP)
        await asyncio.shield(self._stopped)

    def _check_open(self) -> None:
        if self._closing:
            raise SpoolClosed(f"spool {self.path} is closed")
        if self._dead is not None:
            failure = SpoolError(f"spool {self.path} takes no more records: {self._dead}")
            raise failure from self._dead

    def _resolve(
        self,
        outcomes: list[_Outcome],
        written: list[tuple[_Append, tuple[int, int]]],
        stats: _Stats,
        settled: tuple[int, int] = (0, 0),
    ) -> None:
        """Loop callback, one per processed group: index what was written, resolve futures.
        ``settled``: the appends' bytes, and the sequence number after the last of them."""
        settled_bytes, settled_to = settled
        self._pending_bytes -= settled_bytes
        self._written_to = max(self._written_to, settled_to)
        self._stats = stats
        for op, (segment, position) in written:
            self._index(op.seq, segment, position, op.length, op.record)
        for future, result, error in outcomes:
            if future.done():  # its awaiter was cancelled
                continue
            if error is None:
                future.set_result(result)
            elif isinstance(error, SpoolError):
                future.set_exception(error)
            else:
                # A fresh exception per future: one instance raised in many tasks would pile
                # every task's traceback onto it.
                failure = SpoolError(f"spool {self.path}: {error!r}")
                failure.__cause__ = error
                future.set_exception(failure)

    def _on_stopped(self, error: BaseException | None) -> None:
        """Loop callback from the writer's last act: fail whatever it will never process."""
        if error is not None and self._dead is None:
            self._dead = error
        self._hand_over()  # appends gathered meanwhile fail with the rest
        leftovers: list[_Outcome] = []
        released = 0
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(op, _Stop):
                continue
            reason = error if error is not None else SpoolClosed(f"spool {self.path} closed")
            if isinstance(op, list):
                released += sum(append.length for append in op)
                leftovers += ((append.future, None, reason) for append in op)
            else:
                leftovers.append((op.future, None, reason))
        self._resolve(leftovers, [], self._stats, (released, 0))
        if not self._stopped.done():
            self._stopped.set_result(None)

    # -- writer thread -----------------------------------------------------------------------

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the loop; a closed loop has no one left to tell."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _writer_stats(self, flushes: int) -> _Stats:
        return (self._files.disk_bytes, flushes)

    def _run(self) -> None:
        """The writer thread: open, then serve groups until the stop sentinel."""
        files = self._files
        error: BaseException | None = None
        try:
            try:
                files.lock()
                frames = files.recover()
            except BaseException as exc:
                if not isinstance(exc, SpoolError):
                    exc = SpoolError(f"cannot open spool {files.log_dir}: {exc}")
                self._post(self._resolve, [(self._ready, None, exc)], [], self._stats)
                return
            stats = self._writer_stats(0)
            self._post(self._resolve, [(self._ready, frames, None)], [], stats)
            self._serve()
        except BaseException as exc:
            error = exc
        finally:
            with contextlib.suppress(Exception):
                files.close(remove_if_empty=error is None and self._remove_if_empty)
            self._post(self._on_stopped, error)

    def _serve(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        flushes = 0
        while True:
            group: list[_Op] = [get()]
            group_bytes = 0
            while len(group) < MAX_GROUP and group_bytes < MAX_GROUP_BYTES:
                try:
                    op = get_nowait()
                except queue.Empty:
                    break
                group.append(op)
                if isinstance(op, list):
                    group_bytes += sum(append.length for append in op)
            ops: list[_Work] = [op for op in group if not isinstance(op, _Stop)]
            if ops:
                appends = [a for op in ops if isinstance(op, list) for a in op]
                settled = (sum(op.length for op in appends), appends[-1].seq + 1 if appends else 0)
                try:
                    outcomes, written = self._process(ops, appends)
                except BaseException as exc:
                    # The spool cannot go on (a write that could not be undone, or a bug):
                    # fail this group so no request hangs; _run then fails everything queued.
                    failed = [(a.future, None, exc) for a in appends]
                    failed += [(op.future, None, exc) for op in ops if not isinstance(op, list)]
                    self._post(self._resolve, failed, [], self._writer_stats(flushes), settled)
                    raise
                flushes += bool(written)
                stats = self._writer_stats(flushes)
                self._post(self._resolve, outcomes, written, stats, settled)
            if len(ops) != len(group):
                return

    def _process(
        self, ops: list[_Work], appends: list[_Append]
    ) -> tuple[list[_Outcome], list[tuple[_Append, tuple[int, int]]]]:
        """One group: the appends in one write and one flush, then the other operations.
        Only a :class:`SpoolError` (the spool is unusable) escapes."""
        files = self._files
        outcomes: list[_Outcome] = []
        written: list[tuple[_Append, tuple[int, int]]] = []
        if appends:
            try:
                places = files.append([(op.seq, op.meta, op.value) for op in appends])
                written = list(zip(appends, places, strict=True))
                error: BaseException | None = None
            except SpoolError:
                raise
            except OSError as exc:
                error = exc
            outcomes += ((op.future, None, error) for op in appends)
        for op in ops:
            if isinstance(op, list | _Stop):
                continue
            try:
                outcomes.append((op.future, self._other(op), None))
            except SpoolError:
                raise
            except (OSError, ValueError) as exc:
                outcomes.append((op.future, None, exc))
        return outcomes, written

    def _other(self, op: _Read | _Commit | _SetAside) -> object:
        files = self._files
        if isinstance(op, _Read):
            return {
                entry.seq: files.read(entry.segment, entry.position, entry.length)[1]
                for entry in op.entries
            }
        if isinstance(op, _Commit):
            files.commit(op.head)
            return None
        for seq, record in op.items:
            files.set_aside(seq, record, op.reason)
        return None
