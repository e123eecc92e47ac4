"""The spool's log on disk: its format, reading it without the lock, and writing it as the
lock holder (:class:`SpoolFiles`). Synchronous; :mod:`hookd.publish.spool` drives it from
a writer thread, ``hookd spool`` from the command line.

The format is Kafka's own log, small. Each worker index has a directory ``spool-<index>/``
holding segments named by the sequence number of their first record (``<seq:020>.log``); a
record is one frame, appended and never rewritten::

    frame   = length:u32  crc32(payload):u32  payload            (big-endian)
    payload = seq:u64  timestamp_ms:i64  topic_len:u16  key_len:i32 (-1: no key)  headers_len:u32
              topic  key  headers  value

``committed`` holds the lowest sequence number not yet forwarded (with its own CRC). It is
written without fsync: losing an update only makes the next holder forward some records
again, which at-least-once allows. A segment whose records all lie below it is deleted.

Crash safety:

* ``kill -9``: the kernel keeps every completed ``write``; a frame cut short is a torn tail.
* Torn tail or power loss: the writes of an unfinished group may reach the disk in part, in
  any order. On open, each segment is read frame by frame; the first frame whose length runs
  past the file or whose CRC does not match ends it, and the last segment is truncated there.
  Every frame acknowledged before the crash lies before that point: it was fdatasync'd.
* A failed write is cut back off the segment before its error is reported.
* A new segment's directory entry is fsynced before any record in it is acknowledged.

Processes. ``spool-<index>.lock``, held with ``fcntl.flock``, keeps a second process (or a
second holder in this one) off a spool; the kernel drops it when the holder dies, so a
``kill -9`` never leaves a stale lock. Reading a spool without the lock (``hookd spool
status`` and ``export``) is safe: frames are only appended, and a frame being written reads as
a torn tail, which a reader without the lock never truncates.

Dead letters. A record the broker refuses for good is written, with the reason, to its own
file in ``spool-<index>/dead/`` (fsynced) and then released. One file per record lets
``hookd spool requeue`` take dead letters back while hookd runs.

Upgrades. A ``spool-<index>.db`` left by the SQLite spool of earlier versions is read into the
log on open, records and dead letters alike, and removed once they are durable here.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import sqlite3
import stat
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hookd.record import Record, RecordHeaders

log = logging.getLogger("hookd.spool")

#: Largest segment; smaller spools use :func:`segment_bytes_for`.
SEGMENT_BYTES: Final = 64 * 1024 * 1024
_IOV_MAX: Final = 1024

_FRAME: Final = struct.Struct(">II")  # payload length, CRC-32 of the payload
_META: Final = struct.Struct(">QqHiI")  # seq, timestamp_ms, topic len, key len, headers len
_COMMITTED: Final = struct.Struct(">QI")  # lowest seq not forwarded, CRC-32 of those 8 bytes
_DEAD: Final = struct.Struct(">qH")  # set-aside time (ms), reason length; then one frame
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_SEGMENT_SUFFIX: Final = ".log"
#: Spool files hold webhook bodies: only hookd's own user may read or write them.
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700
#: Every spool file is opened without following a symbolic link another user may have planted.
_OPEN_FLAGS: Final = os.O_NOFOLLOW | os.O_CLOEXEC
#: Bytes a frame adds to its payload.
FRAME_HEAD_BYTES: Final = _FRAME.size


class SpoolError(Exception):
    """The spool could not make a record durable (or read or release it); answer 503."""


class SpoolFull(SpoolError):
    """Appending would take the spool beyond ``max_bytes``; nothing was written. Answer 503."""


class SpoolLocked(SpoolError):
    """Another process (or another open :class:`Spool`) holds this spool."""


class SpoolClosed(SpoolError):
    """The spool was closed; it takes no more calls."""


# -- the format (pure) ----------------------------------------------------------------------


def encode_meta(seq: int, record: Record) -> bytes:
    """The payload up to the value: everything but the body, which is written as it is."""
    topic = record.topic.encode()
    key = record.key
    headers = _encode_headers(record.headers)
    return b"".join(
        (
            _META.pack(
                seq,
                record.timestamp_ms,
                len(topic),
                -1 if key is None else len(key),
                len(headers),
            ),
            topic,
            b"" if key is None else bytes(key),
            headers,
        )
    )


def frame_head(meta: bytes, value: bytes) -> bytes:
    """Length and CRC for the payload ``meta + value``, followed by ``meta``."""
    crc = zlib.crc32(value, zlib.crc32(meta))
    return _FRAME.pack(len(meta) + len(value), crc) + meta


def decode_payload(payload: bytes) -> tuple[int, Record]:
    """``(seq, record)`` from a payload whose CRC was checked; ``ValueError`` if malformed."""
    if len(payload) < _META.size:
        raise ValueError("spool frame shorter than its header")
    seq, timestamp_ms, topic_len, key_len, headers_len = _META.unpack_from(payload)
    offset = _META.size
    topic = payload[offset : offset + topic_len].decode()
    offset += topic_len
    key = None
    if key_len >= 0:
        key = payload[offset : offset + key_len]
        offset += key_len
    headers = _decode_headers(payload[offset : offset + headers_len])
    offset += headers_len
    if offset > len(payload):
        raise ValueError("spool frame fields run past its end")
    return seq, Record(topic, key, payload[offset:], headers, timestamp_ms)


def read_frame(data: bytes | memoryview, position: int) -> bytes | None:
    """The payload of the frame at ``position``, or ``None`` where the log ends: too few bytes
    for a frame (a torn tail, or the end) or a CRC that does not match."""
    if position + _FRAME.size > len(data):
        return None
    length, crc = _FRAME.unpack_from(data, position)
    start = position + _FRAME.size
    if start + length > len(data):
        return None
    payload = bytes(data[start : start + length])
    return payload if zlib.crc32(payload) == crc else None


def _encode_headers(headers: RecordHeaders) -> bytes:
    """Lossless, order-preserving: ``count`` then ``len name len value`` per header (u32 BE).

    Names are UTF-8 (``surrogatepass``: any ``str`` round-trips); values are raw bytes.
    Duplicate names are kept, as Kafka allows them.
    """
    parts = [_U32.pack(len(headers))]
    for name, value in headers:
        raw_name = name.encode("utf-8", "surrogatepass")
        raw_value = bytes(value)
        parts += (_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value)
    return b"".join(parts)


def _decode_headers(blob: bytes) -> RecordHeaders:
    """Inverse of :func:`_encode_headers`; a malformed blob raises ``ValueError``."""
    view = memoryview(blob)
    try:
        (count,) = _U32.unpack_from(view, 0)
        offset = 4
        out: list[tuple[str, bytes]] = []
        for _ in range(count):
            (name_len,) = _U32.unpack_from(view, offset)
            offset += 4
            name = bytes(view[offset : offset + name_len]).decode("utf-8", "surrogatepass")
            offset += name_len
            (value_len,) = _U32.unpack_from(view, offset)
            offset += 4
            out.append((name, bytes(view[offset : offset + value_len])))
            offset += value_len
    except struct.error as exc:
        raise ValueError(f"spool headers: {exc}") from None
    if offset != len(view):
        raise ValueError(f"spool headers: {len(view) - offset} bytes left over")
    return tuple(out)


def segment_bytes_for(max_bytes: int) -> int:
    """Segment size for a spool of ``max_bytes``: a sixteenth of it, between 64 KiB (fewer
    files) and :data:`SEGMENT_BYTES`, and never over a quarter of it -- a forwarded segment
    waits on disk until it is full, and must not take the room that new records need."""
    return min(SEGMENT_BYTES, max(max_bytes // 16, min(64 * 1024, max_bytes // 4)))


def _segment_name(base: int) -> str:
    return f"{base:020d}{_SEGMENT_SUFFIX}"


# -- reading a spool's files (no lock needed) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One record in a segment: where it lies and what it is."""

    seq: int
    segment: int  # the segment's base sequence number
    position: int
    length: int  # frame bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record set aside because the broker refused it for good."""

    path: Path
    seq: int
    record: Record
    reason: str
    set_aside_ms: int


@dataclass(slots=True)
class SegmentScan:
    """What reading one segment found: its frames, where valid data ends, the file's size."""

    base: int
    path: Path
    frames: list[Frame]
    valid_end: int
    file_size: int
    last_seq: int  # of the last valid frame, -1 if none


def spool_dir(directory: Path, index: int) -> Path:
    """The log directory of worker ``index``'s spool under ``[spool] path``."""
    return directory / f"spool-{index}"


def spool_indexes(directory: Path) -> list[int]:
    """The worker indexes that have a spool in ``directory`` (a log, or a SQLite file from
    before the log, which opening converts)."""
    indexes: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for path in directory.glob("spool-*"):
            number = path.name.removeprefix("spool-").removesuffix(".db")
            if number.isdigit() and (path.is_dir() or path.suffix == ".db"):
                indexes.add(int(number))
    return sorted(indexes)


def segments(log_dir: Path) -> list[tuple[int, Path]]:
    """``(base, path)`` of every segment, oldest first."""
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        for path in log_dir.iterdir():
            stem = path.name.removesuffix(_SEGMENT_SUFFIX)
            if path.name.endswith(_SEGMENT_SUFFIX) and stem.isdigit():
                found.append((int(stem), path))
    return sorted(found)


def scan_segment(base: int, path: Path, *, from_seq: int = 0) -> SegmentScan:
    """Read a segment frame by frame up to the first frame that is torn or corrupt; keep the
    frames at or above ``from_seq``."""
    data = path.read_bytes()
    frames: list[Frame] = []
    position, last_seq = 0, -1
    while (payload := read_frame(data, position)) is not None:
        length = _FRAME.size + len(payload)
        if len(payload) < _META.size:
            break
        last_seq = _META.unpack_from(payload)[0]
        if last_seq >= from_seq:
            frames.append(Frame(last_seq, base, position, length, payload))
        position += length
    return SegmentScan(base, path, frames, position, len(data), last_seq)


def read_committed(log_dir: Path) -> int:
    """The lowest sequence number not yet forwarded, as last written; 0 when unknown."""
    try:
        data = (log_dir / "committed").read_bytes()
    except FileNotFoundError:
        return 0
    if len(data) != _COMMITTED.size:
        return 0
    seq, crc = _COMMITTED.unpack(data)
    return seq if zlib.crc32(data[:8]) == crc else 0


def pending_frames(log_dir: Path) -> Iterator[Frame]:
    """Every record not yet forwarded, oldest first, read without the lock."""
    committed = read_committed(log_dir)
    for base, path in segments(log_dir):
        with contextlib.suppress(FileNotFoundError):  # the forwarder removed it meanwhile
            yield from scan_segment(base, path, from_seq=committed).frames


def dead_letters(log_dir: Path) -> list[DeadLetter]:
    """The dead letters of a spool, oldest first; unreadable files are skipped."""
    found: list[DeadLetter] = []
    with contextlib.suppress(FileNotFoundError):
        for path in sorted((log_dir / "dead").glob("*.rec")):
            try:
                data = path.read_bytes()
                set_aside_ms, reason_len = _DEAD.unpack_from(data)
                start = _DEAD.size + reason_len
                payload = read_frame(data, start)
                if payload is None:
                    continue
                seq, record = decode_payload(payload)
            except (OSError, ValueError, struct.error):
                continue
            reason = data[_DEAD.size : start].decode(errors="replace")
            found.append(DeadLetter(path, seq, record, reason, set_aside_ms))
    return found


def count_dead_letters(log_dir: Path) -> int:
    """How many dead letters a spool holds (one file each; cheap enough for every scrape)."""
    with contextlib.suppress(FileNotFoundError):
        return sum(1 for _ in (log_dir / "dead").glob("*.rec"))
    return 0


def _check_private(path: Path, what: str) -> os.stat_result:
    """Refuse a spool file or directory another local user could have planted or can change:
    a symbolic link, someone else's, or writable by group or others. Records in the spool are
    forwarded as verified events, so the spool must be hookd's alone. A file readable by others
    (0644, as earlier versions created them) is made private instead."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise SpoolError(f"spool {what} {path} is a symbolic link; hookd refuses it")
    if info.st_uid != os.geteuid():
        raise SpoolError(
            f"spool {what} {path} belongs to uid {info.st_uid}, not to hookd (uid "
            f"{os.geteuid()}); hookd refuses records it did not write (chown it, or remove it)"
        )
    if info.st_mode & 0o022:
        raise SpoolError(
            f"spool {what} {path} is writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); hookd refuses it (chmod go-w, after checking "
            "who wrote it)"
        )
    private = _DIR_MODE if stat.S_ISDIR(info.st_mode) else _FILE_MODE
    if stat.S_IMODE(info.st_mode) & ~private:
        os.chmod(path, private)
    return info


def _private_dir(path: Path, what: str) -> None:
    """Create a directory only hookd's user can enter, or check an existing one."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=_DIR_MODE)
    _check_private(path, what)


def lock_file_pid(fd: int) -> str:
    """The pid a spool lock file names (``"unknown"`` if it names none)."""
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (new or removed files) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- writing a spool's files (the lock holder only) ------------------------------------------


class SpoolFiles:
    """Synchronous access to one worker index's spool, for the lock holder: the writer thread
    of a :class:`Spool`, or ``hookd spool`` on a stopped spool. Nothing here is thread-safe."""

    def __init__(self, directory: Path, index: int, max_bytes: int) -> None:
        self.directory = directory
        self.index = index
        self.log_dir = spool_dir(directory, index)
        self.lock_path = directory / f"spool-{index}.lock"
        self.legacy_path = directory / f"spool-{index}.db"
        self.segment_bytes = segment_bytes_for(max_bytes)
        self._lock_fd: int | None = None
        self._active: tuple[int, int] | None = None  # (base, fd) of the segment appended to
        self._active_size = 0
        self._sizes: dict[int, int] = {}  # base -> bytes, every segment on disk
        self._readers: dict[int, int] = {}  # base -> fd, for reading back
        self._committed_fd: int | None = None
        self.next_seq = 0

    @property
    def disk_bytes(self) -> int:
        """Bytes the segment files hold."""
        return sum(self._sizes.values())

    def lock(self) -> None:
        """Take the spool's lock, or raise :class:`SpoolLocked` naming the holder's pid."""
        self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, _FILE_MODE)
        except OSError as exc:
            raise SpoolError(f"cannot open the spool lock {self.lock_path}: {exc}") from exc
        try:
            _check_private(self.lock_path, "lock file")
        except SpoolError:
            os.close(fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_file_pid(fd)
            os.close(fd)
            raise SpoolLocked(
                f"spool {self.log_dir} is in use (lock {self.lock_path} held by pid {holder}); "
                "each hookd process needs its own spool (worker_index)"
            ) from None
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def recover(self) -> list[Frame]:
        """Open the log after whatever ended the last holder: convert a SQLite spool, read every
        segment, cut a torn tail, remove spent segments. Returns the records not forwarded."""
        _private_dir(self.log_dir, "directory")
        _private_dir(self.log_dir / "dead", "directory")
        for path in self.log_dir.iterdir():
            if path.name != "dead":
                _check_private(path, "file")
        for path in (self.log_dir / "dead").iterdir():
            _check_private(path, "dead letter")
        fsync_dir(self.log_dir)
        fsync_dir(self.directory)
        committed = read_committed(self.log_dir)
        found = segments(self.log_dir)
        pending: list[Frame] = []
        last_seq = -1
        for number, (base, path) in enumerate(found):
            scan = scan_segment(base, path, from_seq=committed)
            if scan.valid_end < scan.file_size:
                self._cut(scan, last=number == len(found) - 1)
            pending += scan.frames
            last_seq = max(last_seq, scan.last_seq)
            self._sizes[base] = scan.valid_end
        self.next_seq = max(committed, last_seq + 1, found[-1][0] if found else 0)
        head = pending[0].seq if pending else self.next_seq
        self._remove_spent(head)
        if found and found[-1][0] in self._sizes:
            base = found[-1][0]
            self._active = (base, self._open_segment(base))
            self._active_size = self._sizes[base]
        if self.legacy_path.exists():
            pending += self._convert_legacy()
        return pending

    def _cut(self, scan: SegmentScan, *, last: bool) -> None:
        lost = scan.file_size - scan.valid_end
        if last:
            log.warning(
                "spool %s: cut a torn tail of %d bytes (a write cut short by a crash; "
                "nothing in it was acknowledged)",
                scan.path,
                lost,
            )
        else:
            log.error(
                "spool %s: %d bytes after offset %d do not read back (corrupt on disk); "
                "the records in them are lost",
                scan.path,
                lost,
                scan.valid_end,
            )
        fd = os.open(scan.path, os.O_WRONLY | _OPEN_FLAGS)
        try:
            os.ftruncate(fd, scan.valid_end)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _open_segment(self, base: int) -> int:
        return os.open(self.log_dir / _segment_name(base), os.O_WRONLY | os.O_APPEND | _OPEN_FLAGS)

    def _roll(self, base: int) -> None:
        """Start a new segment at ``base``; its directory entry is durable before it is used."""
        if self._active is not None:
            os.close(self._active[1])
        fd = os.open(
            self.log_dir / _segment_name(base),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS,
            _FILE_MODE,
        )
        fsync_dir(self.log_dir)
        self._active = (base, fd)
        self._active_size = 0
        self._sizes[base] = 0

    def append(self, frames: Sequence[tuple[int, bytes, bytes]]) -> list[tuple[int, int]]:
        """Write ``(seq, meta, value)`` frames and fdatasync once; returns ``(segment,
        position)`` per frame. On failure the segment is cut back to where it was and the
        error raised; if even that fails, :class:`SpoolError` says the spool is unusable."""
        if self._active is None or self._active_size >= self.segment_bytes:
            self._roll(frames[0][0])
        assert self._active is not None
        base, fd = self._active
        start = self._active_size
        buffers: list[bytes] = []
        places: list[tuple[int, int]] = []
        position = start
        for _, meta, value in frames:
            head = frame_head(meta, value)
            buffers += (head, value)
            places.append((base, position))
            position += len(head) + len(value)
        try:
            for chunk in range(0, len(buffers), _IOV_MAX):
                part = buffers[chunk : chunk + _IOV_MAX]
                written = os.writev(fd, part)
                expected = sum(map(len, part))
                if written != expected:  # a full disk: a short write, then ENOSPC
                    raise OSError(f"short write: {written} of {expected} bytes")
            os.fdatasync(fd)
        except OSError:
            self._truncate_back(fd, start)
            raise
        self._active_size = position
        self._sizes[base] = position
        self.next_seq = frames[-1][0] + 1
        return places

    def _truncate_back(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            os.fdatasync(fd)
        except OSError as exc:
            raise SpoolError(
                f"spool {self.log_dir}: a failed write could not be undone ({exc}); "
                "the spool takes no more records"
            ) from exc

    def read(self, segment: int, position: int, length: int) -> tuple[int, Record]:
        """The record of the frame at ``position`` in ``segment``."""
        fd = self._readers.get(segment)
        if fd is None:
            fd = os.open(self.log_dir / _segment_name(segment), os.O_RDONLY | _OPEN_FLAGS)
            self._readers[segment] = fd
        data = os.pread(fd, length, position)
        payload = read_frame(data, 0)
        if payload is None:
            raise SpoolError(
                f"spool {self.log_dir}: record at {segment}:{position} does not read back"
            )
        return decode_payload(payload)

    def commit(self, head: int) -> None:
        """Everything below ``head`` is forwarded: note it, remove segments wholly below it."""
        if self._committed_fd is None:
            self._committed_fd = os.open(
                self.log_dir / "committed", os.O_WRONLY | os.O_CREAT | _OPEN_FLAGS, _FILE_MODE
            )
        os.pwrite(self._committed_fd, _COMMITTED.pack(head, zlib.crc32(_U64.pack(head))), 0)
        self._remove_spent(head)

    def _remove_spent(self, head: int) -> None:
        """Unlink every segment but the active one whose records all lie below ``head``."""
        bases = sorted(self._sizes)
        removed = False
        for base, after in itertools.pairwise(bases):
            if after > head:
                break
            if self._active is not None and base == self._active[0]:
                continue
            self._unlink_segment(base)
            removed = True
        if self._active is not None and head >= self.next_seq:
            # Everything is forwarded: a full active segment is rolled on the next append
            # and can go now rather than a segment later.
            base, fd = self._active
            if self._active_size >= self.segment_bytes:
                os.close(fd)
                self._active = None
                self._unlink_segment(base)
                removed = True
        if removed:
            fsync_dir(self.log_dir)

    def _unlink_segment(self, base: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_dir / _segment_name(base))
        self._sizes.pop(base, None)
        reader = self._readers.pop(base, None)
        if reader is not None:
            os.close(reader)

    def set_aside(self, seq: int, record: Record, reason: str) -> None:
        """Write one dead letter durably (file, fsync, rename, directory fsync)."""
        meta = encode_meta(seq, record)
        raw_reason = reason.encode()[:4096]
        data = (
            _DEAD.pack(int(time.time() * 1000), len(raw_reason))
            + raw_reason
            + frame_head(meta, record.value)
            + record.value
        )
        dead = self.log_dir / "dead"
        name = f"{seq:020d}-{time.time_ns()}.rec"
        temporary = dead / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, _FILE_MODE)
        try:
            view = memoryview(data)
            while view:  # a regular file writes short only when the disk is full
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, dead / name)
        fsync_dir(dead)

    def close(self, *, remove_if_empty: bool = False) -> None:
        """Close every file; with ``remove_if_empty``, delete the log first when it holds no
        record and no dead letter. The lock is released last."""
        if self._active is not None:
            with contextlib.suppress(OSError):
                os.close(self._active[1])
            self._active = None
        for fd in (*self._readers.values(), self._committed_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._readers.clear()
        self._committed_fd = None
        if remove_if_empty and count_dead_letters(self.log_dir) == 0:
            self._remove_log()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _remove_log(self) -> None:
        """Delete the log directory (the lock file stays: another process may hold it open,
        and removing it would let two processes lock two different files)."""
        for _, path in segments(self.log_dir):
            path.unlink()
        for name in ("committed",):
            with contextlib.suppress(FileNotFoundError):
                (self.log_dir / name).unlink()
        with contextlib.suppress(FileNotFoundError):
            for leftover in (self.log_dir / "dead").glob(".*.tmp"):
                leftover.unlink()
            (self.log_dir / "dead").rmdir()
        with contextlib.suppress(FileNotFoundError):
            self.log_dir.rmdir()
        fsync_dir(self.directory)

    def _convert_legacy(self) -> list[Frame]:
        """Move the records and dead letters of a SQLite spool into the log, then remove it."""
        path = self.legacy_path
        for suffix in (".db", ".db-wal"):
            with contextlib.suppress(FileNotFoundError):
                _check_private(path.with_suffix(suffix), "file")
        try:
            with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
                rows = db.execute(
                    "SELECT topic, key, value, headers, timestamp_ms FROM spool ORDER BY id"
                ).fetchall()
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
                dead = []
                if "dead_letter" in tables:
                    dead = db.execute(
                        "SELECT id, topic, key, value, headers, timestamp_ms, reason "
                        "FROM dead_letter ORDER BY id"
                    ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the SQLite spool {path}: {exc}") from exc
        records = [
            Record(topic, key, bytes(value), _decode_headers(headers), timestamp_ms)
            for topic, key, value, headers, timestamp_ms in rows
        ]
        converted: list[Frame] = []
        if records:
            first = self.next_seq
            batch = [(first + i, encode_meta(first + i, r), r.value) for i, r in enumerate(records)]
            places = self.append(batch)
            for (seq, meta, value), (segment, position) in zip(batch, places, strict=True):
                payload = meta + value
                converted.append(Frame(seq, segment, position, _FRAME.size + len(payload), payload))
        for row_id, topic, key, value, headers, timestamp_ms, reason in dead:
            record = Record(topic, key, bytes(value), _decode_headers(headers), timestamp_ms)
            self.set_aside(row_id, record, reason)
        for suffix in (".db", ".db-wal", ".db-shm"):
            with contextlib.suppress(FileNotFoundError):
                path.with_suffix(suffix).unlink()
        fsync_dir(self.directory)
        log.warning(
            "converted the SQLite spool %s: %d records and %d dead letters moved to %s",
            path,
            len(records),
            len(dead),
            self.log_dir,
        )
        return converted
