"""``hookd spool status | export | requeue | drain``: the spool, for operators.

Every command works while hookd runs and while it is stopped, and none can corrupt a spool a
running hookd holds:

* ``status`` and ``export`` only read (:func:`~hookd.publish.segments.pending_frames`,
  :func:`~hookd.publish.segments.dead_letters`). A frame being written reads as a torn tail,
  which they skip and never truncate. Whether hookd holds a spool is tested with a shared,
  non-blocking ``flock`` on its lock file, released at once (:func:`lock_holder`).
* ``requeue`` writes only a spool of its own, a new worker index (:func:`requeue`), and
  deletes dead-letter files, which the running writer never rewrites.
* ``drain`` takes each spool's lock and refuses one that hookd holds.

The logic is here, the argument parsing in :mod:`hookd.cli`. Only ``drain`` talks to Kafka,
through :mod:`hookd.publish.cluster` (imported when it runs: quixstreams is slow to import).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hookd.config import Config, ConfigError, read_toml, validate
from hookd.publish.segments import (
    FRAME_HEAD_BYTES,
    DeadLetter,
    SpoolError,
    SpoolFiles,
    SpoolLocked,
    dead_letters,
    decode_payload,
    encode_meta,
    fsync_dir,
    lock_file_pid,
    pending_frames,
    segments,
    spool_dir,
    spool_indexes,
)
from hookd.record import Record

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

    from hookd.publish.cluster import Cluster

#: ``hookd spool requeue`` writes to a new worker index at or above this. A running hookd
#: adopts (forwards, then removes) every spool whose index is at or above its worker count,
#: and its own workers use 0 .. count-1: starting at 1000 keeps a requeue's spool clear of the
#: index of any worker of a hookd with fewer than 1000 workers (one per CPU at most, in
#: practice), so the spool is never one a worker reopens as its own, and it is adopted.
REQUEUE_BASE_INDEX: Final = 1000
#: Records per append (one write and one fdatasync each) when requeueing.
_REQUEUE_CHUNK: Final = 1024
_REQUEUE_CHUNK_BYTES: Final = 16 * 1024 * 1024
#: ``drain``: beyond ``kafka.ack_timeout_s`` (librdkafka's own deadline per record), how long
#: to wait for the last delivery reports.
_DRAIN_REPORT_MARGIN_S: Final = 5.0


class ToolError(Exception):
    """An expected failure: printed as one ``error:`` line, exit status 1."""


class SpoolHeld(ToolError):
    """A running hookd holds a spool that ``drain`` needs."""


# -- config ---------------------------------------------------------------------------------


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """The ``[spool]`` and ``[kafka]`` sections of a config file, validated as hookd does.

    Only these two: the routes (and the secrets their ``${VAR}`` name) play no part here, so
    the tool also works in a shell that lacks the secrets' environment. Raises
    :class:`ConfigError` for an unreadable file, an invalid section, or no ``[spool]``.
    """
    file = Path(path)
    return settings_from(read_toml(file), os.environ if env is None else env, file.parent)


def settings_from(raw: dict[str, Any], env: Mapping[str, str], base: Path) -> Config:
    """:func:`load_settings` for TOML already parsed (``$HOOKD_CONFIG_TOML``'s text)."""
    if "spool" not in raw:
        raise ConfigError([("spool", "no [spool] section: this config keeps no spool")])
    subset: dict[str, Any] = {name: raw[name] for name in ("spool", "kafka") if name in raw}
    return validate(subset, env, base=base)


def spool_root(config: Config) -> Path:
    """``[spool] path`` (relative to the working directory, as for hookd); it must exist."""
    assert config.spool is not None
    directory = Path(config.spool.path)
    if not directory.is_dir():
        raise ToolError(
            f"spool path {directory} does not exist or is not a directory "
            "(hookd creates it at its first start; is this the right config and machine?)"
        )
    return directory


def selected_indexes(directory: Path, index: int | None) -> list[int]:
    """Every worker index with a spool, or just ``index`` (which must have one)."""
    found = spool_indexes(directory)
    if index is None:
        return found
    if index not in found:
        known = ", ".join(map(str, found)) or "none"
        raise ToolError(f"no spool of index {index} under {directory} (indexes: {known})")
    return [index]


def legacy_paths(directory: Path, indexes: Iterable[int]) -> list[Path]:
    """The ``spool-<n>.db`` files (SQLite, from before the log) of these indexes."""
    paths = [SpoolFiles(directory, index, 1).legacy_path for index in indexes]
    return [path for path in paths if path.exists()]


# -- the lock, read only --------------------------------------------------------------------


def lock_holder(directory: Path, index: int) -> str | None:
    """The pid (as the lock file names it; ``"unknown"`` if it names none) of the process that
    holds worker ``index``'s spool, or ``None`` when none does.

    Tested with a shared, non-blocking ``flock``, released at once: it conflicts with the
    holder's exclusive lock and with nothing else, and it writes nothing. A hookd that tries
    to take the lock during the instant the test holds it retries (its start waits for its
    spool, adoption comes back 5 s later).
    """
    path = SpoolFiles(directory, index, 1).lock_path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock_file_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# -- status ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegacyStatus:
    """A ``spool-<n>.db`` from the SQLite spool of earlier versions; hookd (or ``drain``)
    converts it into the log when it next opens that index. Counts are ``None`` when the file
    cannot be read."""

    path: Path
    records: int | None
    dead_letters: int | None


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    index: int
    path: Path
    depth: int  # records not yet forwarded
    bytes: int  # what the segment files hold (hookd_spool_bytes; max_bytes bounds it)
    dead_letters: int
    dead_letter_bytes: int
    oldest_timestamp_ms: int | None
    holder: str | None  # the pid of the hookd that holds it
    legacy: LegacyStatus | None


def spool_status(directory: Path, index: int) -> SpoolStatus:
    """One spool, read without its lock."""
    log_dir = spool_dir(directory, index)
    depth, oldest = 0, None
    for frame in pending_frames(log_dir):
        depth += 1
        timestamp = decode_payload(frame.payload)[1].timestamp_ms
        oldest = timestamp if oldest is None else min(oldest, timestamp)
    size = 0
    for _, path in segments(log_dir):
        with contextlib.suppress(FileNotFoundError):  # the forwarder removed it meanwhile
            size += path.stat().st_size
    dead = 0
    dead_bytes = 0
    with contextlib.suppress(FileNotFoundError):
        for path in (log_dir / "dead").glob("*.rec"):
            with contextlib.suppress(FileNotFoundError):
                dead_bytes += path.stat().st_size
                dead += 1
    legacy_path = SpoolFiles(directory, index, 1).legacy_path
    legacy = legacy_status(legacy_path) if legacy_path.exists() else None
    holder = lock_holder(directory, index)
    return SpoolStatus(index, log_dir, depth, size, dead, dead_bytes, oldest, holder, legacy)


def legacy_status(path: Path) -> LegacyStatus:
    """Row counts of a SQLite spool, opened read-only."""
    counts: list[int | None] = [None, None]
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            for i, table in enumerate(("spool", "dead_letter")):
                if table in tables:
                    counts[i] = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                else:
                    counts[i] = 0
    except sqlite3.Error:
        pass
    return LegacyStatus(path, counts[0], counts[1])


def status(directory: Path) -> list[SpoolStatus]:
    return [spool_status(directory, index) for index in spool_indexes(directory)]


def status_json(directory: Path, spools: list[SpoolStatus], now_ms: int) -> dict[str, Any]:
    def one(spool: SpoolStatus) -> dict[str, Any]:
        legacy = spool.legacy
        return {
            "index": spool.index,
            "path": str(spool.path),
            "depth": spool.depth,
            "bytes": spool.bytes,
            "oldest_timestamp_ms": spool.oldest_timestamp_ms,
            "oldest_age_s": _age_s(spool.oldest_timestamp_ms, now_ms),
            "dead_letters": spool.dead_letters,
            "dead_letter_bytes": spool.dead_letter_bytes,
            "held_by_pid": _pid(spool.holder),
            "legacy": None
            if legacy is None
            else {
                "path": str(legacy.path),
                "records": legacy.records,
                "dead_letters": legacy.dead_letters,
                "note": "converted on next start",
            },
        }

    return {"path": str(directory), "spools": [one(spool) for spool in spools]}


def status_table(directory: Path, spools: list[SpoolStatus], now_ms: int) -> str:
    if not spools:
        return f"no spool under {directory}\n"
    rows = [("INDEX", "DEPTH", "BYTES", "OLDEST", "DEAD LETTERS", "HELD BY")]
    notes: list[str] = []
    for spool in spools:
        age = _age_s(spool.oldest_timestamp_ms, now_ms)
        rows.append(
            (
                str(spool.index),
                str(spool.depth),
                _human_bytes(spool.bytes),
                "-" if age is None else _human_age(age),
                str(spool.dead_letters),
                "-" if spool.holder is None else f"hookd pid {spool.holder}",
            )
        )
        if spool.legacy is not None:
            legacy = spool.legacy
            counts = (
                "unreadable"
                if legacy.records is None or legacy.dead_letters is None
                else f"{legacy.records} records, {legacy.dead_letters} dead letters"
            )
            notes.append(
                f"{legacy.path.name}: SQLite spool from before the log ({counts}); "
                "converted on next start"
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"spool {directory}"]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join([*lines, *notes]) + "\n"


def _age_s(timestamp_ms: int | None, now_ms: int) -> float | None:
    return None if timestamp_ms is None else max(0.0, (now_ms - timestamp_ms) / 1000)


def _pid(holder: str | None) -> int | str | None:
    if holder is None:
        return None
    return int(holder) if holder.isdigit() else holder


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _human_age(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


# -- export ---------------------------------------------------------------------------------


def _put_bytes(out: dict[str, Any], name: str, raw: bytes) -> None:
    try:
        out[name] = raw.decode("utf-8")  # strict: refuses surrogates and overlongs too
    except UnicodeDecodeError:
        out[f"{name}_b64"] = base64.b64encode(raw).decode("ascii")


def _get_bytes(obj: Mapping[str, Any], name: str) -> bytes | None:
    if f"{name}_b64" in obj:
        return base64.b64decode(obj[f"{name}_b64"], validate=True)
    value = obj[name]
    return None if value is None else str(value).encode("utf-8")


def record_json(
    index: int, seq: int, record: Record, dead: DeadLetter | None = None
) -> dict[str, Any]:
    """The export object of one record: every byte string as text when it is valid UTF-8,
    as ``<name>_b64`` (base64) otherwise (``hookd spool export --help`` says it in full)."""
    out: dict[str, Any] = {"index": index, "seq": seq, "topic": record.topic}
    if record.key is None:
        out["key"] = None
    else:
        _put_bytes(out, "key", record.key)
    _put_bytes(out, "value", record.value)
    out["timestamp_ms"] = record.timestamp_ms
    headers = []
    for name, value in record.headers:
        header: dict[str, Any] = {}
        # Names are str; the spool stores them as UTF-8 with surrogatepass, so any str goes.
        _put_bytes(header, "name", name.encode("utf-8", "surrogatepass"))
        _put_bytes(header, "value", value)
        headers.append(header)
    out["headers"] = headers
    if dead is not None:
        out["reason"] = dead.reason
        out["set_aside_ms"] = dead.set_aside_ms
    return out


def record_from_json(obj: Mapping[str, Any]) -> tuple[int, int, Record]:
    """``(index, seq, record)`` from an export object: the inverse of :func:`record_json`."""
    headers = []
    for header in obj["headers"]:
        name = _get_bytes(header, "name")
        value = _get_bytes(header, "value")
        assert name is not None and value is not None
        headers.append((name.decode("utf-8", "surrogatepass"), value))
    value = _get_bytes(obj, "value")
    assert value is not None
    record = Record(
        obj["topic"], _get_bytes(obj, "key"), value, tuple(headers), obj["timestamp_ms"]
    )
    return obj["index"], obj["seq"], record


def export_objects(
    directory: Path, indexes: Iterable[int], *, dead: bool = False
) -> Iterator[dict[str, Any]]:
    """The records not yet forwarded (or the dead letters) of these spools, oldest first per
    spool; read without the lock."""
    for index in indexes:
        log_dir = spool_dir(directory, index)
        if dead:
            for letter in dead_letters(log_dir):
                yield record_json(index, letter.seq, letter.record, letter)
        else:
            for frame in pending_frames(log_dir):
                seq, record = decode_payload(frame.payload)
                yield record_json(index, seq, record)


def export_line(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


# -- requeue --------------------------------------------------------------------------------


@dataclass(slots=True)
class RequeueReport:
    index: int | None = None  # the new spool's worker index; None when nothing was requeued
    requeued: list[tuple[int, int]] = field(default_factory=list)  # (index, seq) taken back
    error: str | None = None


def requeue(
    directory: Path,
    max_bytes: int,
    indexes: Iterable[int],
    seqs: Iterable[int] | None = None,
    *,
    remove: Callable[[Path], None] = lambda path: path.unlink(missing_ok=True),
) -> RequeueReport:
    """Put dead letters back in the queue: write them, with fresh sequence numbers and
    everything else as it was, into a NEW spool of an unused worker index (at or above
    :data:`REQUEUE_BASE_INDEX`), close it, and only then delete their files.

    A running hookd adopts that spool (its index is at or above the worker count) within
    ``ADOPT_INTERVAL_S`` and forwards it; a stopped one does at its next start. A crash between
    the write and the deletes leaves a record both in the new spool and as a dead letter: it is
    forwarded, and a later requeue forwards it again -- a duplicate, never a loss.
    """
    wanted = None if seqs is None else set(seqs)
    letters = [
        (index, letter)
        for index in indexes
        for letter in dead_letters(spool_dir(directory, index))
        if wanted is None or letter.seq in wanted
    ]
    report = RequeueReport()
    if not letters:
        return report
    files = _new_spool(directory, max_bytes)
    report.index = files.index
    written = 0
    try:
        for chunk in _chunks(letters):
            first = files.next_seq
            files.append(
                [
                    (first + i, encode_meta(first + i, letter.record), letter.record.value)
                    for i, (_, letter) in enumerate(chunk)
                ]
            )
            written += len(chunk)
    except (OSError, SpoolError) as exc:
        report.error = f"writing spool-{files.index} failed after {written} records: {exc}"
    finally:
        files.close()
    # The records are durable in the new spool (each append was fdatasync'd, its segment's
    # directory entry fsynced): only now may their dead-letter files go.
    touched: set[Path] = set()
    for index, letter in letters[:written]:
        remove(letter.path)
        touched.add(letter.path.parent)
        report.requeued.append((index, letter.seq))
    for dead_dir in sorted(touched):
        fsync_dir(dead_dir)
    return report


def _chunks(
    letters: list[tuple[int, DeadLetter]],
) -> Iterator[list[tuple[int, DeadLetter]]]:
    chunk: list[tuple[int, DeadLetter]] = []
    size = 0
    for item in letters:
        length = len(item[1].record.value) + FRAME_HEAD_BYTES
        if chunk and (len(chunk) >= _REQUEUE_CHUNK or size + length > _REQUEUE_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += length
    if chunk:
        yield chunk


def _new_spool(directory: Path, max_bytes: int) -> SpoolFiles:
    """A spool of an index above every existing one (and at least REQUEUE_BASE_INDEX), locked
    and recovered. An index another ``requeue`` (or an adopting hookd) holds is skipped."""
    index = max([REQUEUE_BASE_INDEX - 1, *spool_indexes(directory)]) + 1
    for _ in range(1000):
        files = SpoolFiles(directory, index, max_bytes)
        try:
            files.lock()
        except SpoolLocked:
            index += 1
            continue
        try:
            files.recover()  # empty unless another requeue made it meanwhile: append after
        except BaseException:
            files.close()
            raise
        return files
    raise ToolError(f"no free spool index from {index - 1000} to {index - 1} under {directory}")


# -- drain ----------------------------------------------------------------------------------


@dataclass(slots=True)
class SpoolDrain:
    """What ``drain`` did to one spool."""

    index: int
    pending: int = 0
    forwarded: int = 0  # acked by the broker and released
    set_aside: int = 0  # refused by the broker for good: now dead letters
    left: int = 0  # still in the spool
    delivered_but_left: int = 0  # acked, but behind a record that was not: sent again later
    dead_letters: int = 0  # in the spool after the drain
    errors: dict[str, int] = field(default_factory=dict)  # why records were left, counted


@dataclass(slots=True)
class DrainReport:
    spools: list[SpoolDrain] = field(default_factory=list)

    @property
    def left(self) -> int:
        return sum(spool.left for spool in self.spools)


def drain(
    directory: Path,
    config: Config,
    indexes: Iterable[int],
    *,
    cluster: Cluster,
    connect_timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> DrainReport:
    """Forward stopped spools to the broker, releasing only what it acknowledged.

    Takes every spool's lock first and refuses (:class:`SpoolHeld`, touching nothing) when a
    running hookd holds one. Then recovers each, connects (:class:`ToolError` if the broker
    does not answer within ``connect_timeout_s``: every record stays), creates or looks up the
    records' topics as hookd does (on Quix Cloud that maps them to the workspace's names),
    produces every pending record with hookd's producer settings and waits for every
    delivery report. A record the broker refuses for good is set aside as a dead letter, as
    hookd's forwarder does. Only the records below the first one not settled are released; the
    rest stay for another drain (or a hookd start).
    """
    from hookd.publish.cluster import ClusterError
    from hookd.publish.health import Failure, classify

    assert config.spool is not None
    opened: list[SpoolFiles] = []
    emptied: set[int] = set()  # indexes whose log holds no record any more: removed on close
    try:
        held: list[tuple[int, str]] = []
        for index in indexes:
            files = SpoolFiles(directory, index, config.spool.max_bytes)
            try:
                files.lock()
            except SpoolLocked:
                held.append((index, lock_holder(directory, index) or "unknown"))
                continue
            opened.append(files)
        if held:
            raise SpoolHeld(
                "; ".join(
                    f"spool-{index}: hookd pid {pid} is running and forwards this spool itself"
                    for index, pid in held
                )
                + " (drain is for a spool no hookd serves; stop hookd first)"
            )
        work: list[tuple[SpoolFiles, list[tuple[int, Record]]]] = []
        for files in opened:
            frames = files.recover()
            work.append((files, [decode_payload(frame.payload) for frame in frames]))
        report = DrainReport([SpoolDrain(files.index, pending=len(p)) for files, p in work])
        if any(pending for _, pending in work):
            try:
                cluster.connect(connect_timeout_s)
                names = cluster.resolve(
                    sorted({record.topic for _, pending in work for _, record in pending})
                )
            except ClusterError as exc:
                raise ToolError(f"{exc}; every record stays in the spool") from None
            outcomes = _produce_all(
                cluster, names, work, config.kafka.ack_timeout_s + _DRAIN_REPORT_MARGIN_S, clock
            )
            for (files, pending), result in zip(work, report.spools, strict=True):
                _settle(files, pending, outcomes, result, classify, Failure.RECORD)
        for (files, _), result in zip(work, report.spools, strict=True):
            result.dead_letters = len(dead_letters(files.log_dir))
            if not result.left:
                emptied.add(files.index)
        return report
    finally:
        for files in opened:
            # close() removes the log only when it holds no dead letter either
            files.close(remove_if_empty=files.index in emptied)


_Outcomes = dict[tuple[int, int], "KafkaError | None"]


def _produce_all(
    cluster: Cluster,
    names: dict[str, str],
    work: list[tuple[SpoolFiles, list[tuple[int, Record]]]],
    wait_s: float,
    clock: Callable[[], float],
) -> _Outcomes:
    """Produce every record and wait for every delivery report; a record without one by the
    end (``wait_s`` after the last produce) is purged, which reports it failed."""
    from confluent_kafka import KafkaError, KafkaException

    outcomes: _Outcomes = {}

    def on_error(error: KafkaError) -> None:
        pass  # a broker that goes away shows in the delivery reports (message timeout)

    producer = cluster.producer(on_error)

    def report(key: tuple[int, int]) -> Callable[..., None]:
        def delivered(error: KafkaError | None, _message: object = None) -> None:
            outcomes[key] = error

        return delivered

    for files, pending in work:
        for seq, record in pending:
            key = (files.index, seq)
            while True:
                try:
                    producer.produce(
                        names[record.topic],
                        record.value,
                        record.key,
                        headers=list(record.headers),
                        timestamp=record.timestamp_ms,
                        buffer_error_max_tries=0,
                        on_delivery=report(key),
                    )
                except BufferError:  # the local queue is full: let reports drain it
                    producer.poll(0.1)
                    continue
                except KafkaException as exc:
                    error = exc.args[0] if exc.args else None
                    outcomes[key] = (
                        error
                        if isinstance(error, KafkaError)
                        else KafkaError(KafkaError._FAIL, str(exc))
                    )
                break
            producer.poll(0)
    deadline = clock() + wait_s
    while len(producer) and clock() < deadline:
        producer.poll(0.1)
    if len(producer):
        producer.purge()
        producer.poll(0)
    producer.poll(0)
    return outcomes


def _settle(
    files: SpoolFiles,
    pending: list[tuple[int, Record]],
    outcomes: _Outcomes,
    result: SpoolDrain,
    classify: Callable[[int], object],
    poison: object,
) -> None:
    """Set aside what the broker refused for good, then release the records below the first
    one that is neither acked nor set aside."""
    head = None
    for seq, record in pending:
        key = (files.index, seq)
        if key in outcomes and outcomes[key] is None:
            if head is None:
                result.forwarded += 1
            else:
                result.delivered_but_left += 1
                result.left += 1
            continue
        error = outcomes.get(key)
        reason = "no delivery report" if error is None else error.str()
        if error is not None and classify(error.code()) is poison and head is None:
            files.set_aside(seq, record, reason)
            result.set_aside += 1
            continue
        if head is None:
            head = seq
        result.left += 1
        result.errors[reason] = result.errors.get(reason, 0) + 1
    files.commit(files.next_seq if head is None else head)


def drain_lines(report: DrainReport) -> list[str]:
    lines = []
    for spool in report.spools:
        line = (
            f"spool-{spool.index}: {spool.pending} pending, {spool.forwarded} forwarded, "
            f"{spool.left} left"
        )
        if spool.set_aside:
            line += f", {spool.set_aside} refused by the broker for good and set aside"
        if spool.delivered_but_left:
            line += (
                f" ({spool.delivered_but_left} of them delivered but behind an undelivered "
                "record: they will be sent again)"
            )
        if spool.dead_letters:
            line += (
                f"; {spool.dead_letters} dead letters stay (hookd spool export --dead-letters, "
                "hookd spool requeue)"
            )
        lines.append(line)
        lines += [f"  left because: {why} ({n})" for why, n in sorted(spool.errors.items())]
    total = sum(s.forwarded for s in report.spools)
    lines.append(f"forwarded {total}, left {report.left}")
    return lines
