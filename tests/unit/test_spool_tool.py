"""``hookd spool``: status, export, requeue and drain on real spool files in tmp_path (drain
against a scripted producer; ``tests/integration/test_spool_tool_live.py`` runs it against the
embedded broker and a running hookd)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd import cli, spool_tool
from hookd.config import validate
from hookd.publish.cluster import ClusterError
from hookd.publish.segments import (
    SpoolFiles,
    dead_letters,
    decode_payload,
    pending_frames,
    segments,
    spool_dir,
    spool_indexes,
)
from hookd.publish.spool import Spool
from hookd.record import Record

BIG = 1 << 30

#: Records with the awkward bytes: no key, an empty key, binary and empty values, bytes that
#: are not UTF-8 (a lone surrogate's encoding, an overlong form), duplicate header names.
ODD = [
    Record("odd", None, b"", (), 1_700_000_000_000),
    Record(
        "odd", b"", b"\xff\x00\xfe binary", (("dup", b"1"), ("dup", b"\xfe\xff")), 1_700_000_000_001
    ),
    Record("odd", "clé".encode(), "héllo ✓".encode(), (("x", b""),), 1_700_000_000_002),
    Record("other", b"\xed\xa0\x80", b"\xc0\xaf", (("bin", bytes(range(256))),), 1_700_000_000_003),
    Record("odd", b"k", b'{"n":4}', (("hookd-route", b"/in"), ("dup", b"a"), ("dup", b"a")), 5),
]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def make_spool(directory: Path, records: Iterable[Record], dead: int = 0, index: int = 0) -> None:
    """A stopped spool holding ``records``; the first ``dead`` of them are set aside as dead
    letters (the head moves past them, as after hookd's forwarder set them aside)."""

    async def fill() -> None:
        spool = await Spool.open(directory, BIG, index)
        for record in records:
            await spool.append(record)
        if dead:
            await spool.set_aside(list(range(dead)), "refused for good: test")
        await spool.close()

    run(fill())


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def config_file(tmp_path: Path, spool: Path | None, extra: str = "") -> Path:
    path = tmp_path / "hookd.toml"
    section = "" if spool is None else f'[spool]\npath = "{spool}"\n'
    path.write_text(
        '[kafka]\nbroker_address = "127.0.0.1:1"\nack_timeout_s = 1\n'
        + section
        + extra
        # a route whose secret names a variable this shell lacks: the tool does not need it
        + '[[routes]]\npath = "/in"\ntopic = "odd"\nverify = "github"\n'
        + 'secrets = ["${NO_SUCH_SECRET_VAR}"]\n'
    )
    return path


def cli_run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    code = cli.main(list(argv))
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


# -- status ---------------------------------------------------------------------------------


def test_status_of_a_stopped_spool(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD, dead=2)
    (directory / "spool-0.lock").write_text("4242\n")  # the last holder, long gone
    before = snapshot(directory)
    [status] = spool_tool.status(directory)
    assert snapshot(directory) == before  # the lock test wrote nothing, not even a pid
    assert status.index == 0 and status.holder is None and status.legacy is None
    assert status.depth == 3  # five appended, two set aside
    assert status.dead_letters == 2
    assert status.bytes == sum(p.stat().st_size for _, p in segments(spool_dir(directory, 0)))
    assert status.oldest_timestamp_ms == 5  # the smallest timestamp left, not the first seq
    document = spool_tool.status_json(directory, [status], now_ms=5 + 90_000)
    assert document["spools"][0]["oldest_age_s"] == 90.0
    assert document["spools"][0]["held_by_pid"] is None
    table = spool_tool.status_table(directory, [status], now_ms=5 + 90_000).splitlines()
    assert table[0] == f"spool {directory}"
    assert table[1].split() == [
        "INDEX",
        "DEPTH",
        "BYTES",
        "OLDEST",
        "DEAD",
        "LETTERS",
        "HELD",
        "BY",
    ]
    assert table[2].split() == ["0", "3", str(status.bytes), "B", "1m30s", "2", "-"]


def test_status_names_the_pid_that_holds_the_lock_and_writes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD[:2])
    holder = SpoolFiles(directory, 0, BIG)
    holder.lock()  # another open file description: flock conflicts within one process too
    try:
        before = snapshot(directory)
        [status] = spool_tool.status(directory)
        assert status.holder == str(os.getpid())
        document = spool_tool.status_json(directory, [status], 0)
        assert document["spools"][0]["held_by_pid"] == os.getpid()
        assert f"hookd pid {os.getpid()}" in spool_tool.status_table(directory, [status], 0)
        list(spool_tool.export_objects(directory, [0]))
        assert snapshot(directory) == before
    finally:
        holder.close()
    assert spool_tool.lock_holder(directory, 0) is None  # the probe released its lock too
    holder.lock()  # and nothing of it is left to conflict with
    holder.close()


def test_status_reports_a_sqlite_spool_as_converted_on_next_start(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    db = sqlite3.connect(directory / "spool-3.db")
    db.executescript(
        "CREATE TABLE spool (id INTEGER PRIMARY KEY, topic TEXT, key BLOB, value BLOB,"
        " headers BLOB, timestamp_ms INTEGER, size INTEGER);"
        "CREATE TABLE dead_letter (id INTEGER PRIMARY KEY, topic TEXT, key BLOB, value BLOB,"
        " headers BLOB, timestamp_ms INTEGER, size INTEGER, reason TEXT, set_aside_ms INTEGER);"
        "INSERT INTO spool (topic, value, headers, timestamp_ms, size) VALUES"
        " ('t', x'00', x'00000000', 1, 1), ('t', x'01', x'00000000', 2, 1);"
    )
    db.commit()
    db.close()
    before = snapshot(directory)
    [status] = spool_tool.status(directory)
    assert status.index == 3 and status.depth == 0
    assert status.legacy is not None
    assert (status.legacy.records, status.legacy.dead_letters) == (2, 0)
    table = spool_tool.status_table(directory, [status], 0)
    assert (
        "spool-3.db: SQLite spool from before the log (2 records, 0 dead letters); "
        "converted on next start" in table
    )
    document = spool_tool.status_json(directory, [status], 0)
    assert document["spools"][0]["legacy"]["note"] == "converted on next start"
    assert snapshot(directory) == before


# -- export ---------------------------------------------------------------------------------


def test_export_round_trips_every_byte(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD, dead=2)
    config = config_file(tmp_path, directory)
    before = snapshot(directory)

    code, out, err = cli_run(capsysbinary, "spool", "export", "--config", str(config))
    assert code == 0, err
    rows = [spool_tool.record_from_json(json.loads(line)) for line in out.decode().splitlines()]
    assert rows == [(0, seq, ODD[seq]) for seq in (2, 3, 4)]

    code, out, err = cli_run(
        capsysbinary, "spool", "export", "--dead-letters", "--config", str(config)
    )
    assert code == 0, err
    objects = [json.loads(line) for line in out.decode().splitlines()]
    assert [spool_tool.record_from_json(o) for o in objects] == [(0, 0, ODD[0]), (0, 1, ODD[1])]
    assert {o["reason"] for o in objects} == {"refused for good: test"}
    assert all(isinstance(o["set_aside_ms"], int) for o in objects)
    assert snapshot(directory) == before  # read-only


def test_export_encoding_is_text_when_utf8_and_base64_otherwise() -> None:
    obj = spool_tool.record_json(0, 7, ODD[1])
    assert obj["key"] == "" and "key_b64" not in obj  # an empty key is not "no key"
    assert obj["value_b64"] == "/wD+IGJpbmFyeQ==" and "value" not in obj
    assert obj["headers"] == [{"name": "dup", "value": "1"}, {"name": "dup", "value_b64": "/v8="}]
    assert spool_tool.record_json(0, 0, ODD[0])["key"] is None
    surrogate = spool_tool.record_json(0, 3, ODD[3])
    assert surrogate["key_b64"] == "7aCA"  # CESU-style bytes are not UTF-8: base64, not text
    assert list(obj) == ["index", "seq", "topic", "key", "value_b64", "timestamp_ms", "headers"]


_names = st.text(st.characters(exclude_categories=()), max_size=8)  # surrogates too


@settings(max_examples=200, deadline=None)
@given(
    key=st.none() | st.binary(max_size=40),
    value=st.binary(max_size=200) | st.text(max_size=50).map(str.encode),
    headers=st.lists(st.tuples(_names, st.binary(max_size=20)), max_size=5),
    timestamp=st.integers(-(2**63), 2**63 - 1),
)
def test_export_objects_decode_to_the_same_record(
    key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], timestamp: int
) -> None:
    record = Record("t", key, value, tuple(headers), timestamp)
    line = spool_tool.export_line(spool_tool.record_json(4, 9, record))
    assert line.endswith("\n") and "\n" not in line[:-1]
    # the CLI writes lines as UTF-8: nothing in them (a surrogate in a header name) may fail that
    decoded = json.loads(line.encode("utf-8"))
    assert spool_tool.record_from_json(decoded) == (4, 9, record)


def test_export_writes_only_the_chosen_index(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD[:2], index=0)
    make_spool(directory, ODD[2:4], index=2)
    config = str(config_file(tmp_path, directory))
    code, out, _ = cli_run(capsysbinary, "spool", "export", "--index", "2", "--config", config)
    assert code == 0
    assert [json.loads(line)["index"] for line in out.splitlines()] == [2, 2]
    code, out, err = cli_run(capsysbinary, "spool", "export", "--index", "5", "--config", config)
    assert code == 1 and "no spool of index 5" in err and "indexes: 0, 2" in err


# -- config and CLI errors ------------------------------------------------------------------


def test_a_config_without_a_spool_section_is_a_config_error(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    config = str(config_file(tmp_path, None))
    for command in (["status"], ["export"], ["requeue"], ["drain", "--to-broker"]):
        code, out, err = cli_run(capsysbinary, "spool", *command, "--config", config)
        assert code == 2 and out == b""
        assert err.strip() == "config error: spool: no [spool] section: this config keeps no spool"


def test_a_missing_spool_path_is_a_clear_error(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    config = str(config_file(tmp_path, tmp_path / "nowhere"))
    for command in (["status"], ["export"], ["requeue"], ["drain", "--to-broker"]):
        code, _, err = cli_run(capsysbinary, "spool", *command, "--config", config)
        assert code == 1
        assert err.startswith(f"error: spool path {tmp_path / 'nowhere'} does not exist")
        assert "Traceback" not in err


def test_an_invalid_spool_section_names_its_key(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[spool]\npath = "x"\nmax_bytes = -1\n')
    code, _, err = cli_run(capsysbinary, "spool", "status", "--config", str(path))
    assert code == 2 and err.startswith("config error: spool.max_bytes:")


def test_status_of_an_empty_spool_directory(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    config = str(config_file(tmp_path, directory))
    code, out, _ = cli_run(capsysbinary, "spool", "status", "--config", config)
    assert code == 0 and out.decode() == f"no spool under {directory}\n"
    code, out, _ = cli_run(capsysbinary, "spool", "status", "--json", "--config", config)
    assert json.loads(out) == {"path": str(directory), "spools": []}


# -- requeue --------------------------------------------------------------------------------


def test_requeue_writes_a_new_spool_then_deletes_the_dead_letters(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD, dead=3)
    make_spool(directory, ODD[:1], index=1500)  # the new index goes above every existing one
    config = str(config_file(tmp_path, directory))
    code, out, err = cli_run(capsysbinary, "spool", "requeue", "--index", "0", "--config", config)
    assert code == 0, err
    assert "requeued 3 dead letters into spool-1501" in out.decode()
    assert dead_letters(spool_dir(directory, 0)) == []
    requeued = [decode_payload(f.payload) for f in pending_frames(spool_dir(directory, 1501))]
    assert requeued == [(0, ODD[0]), (1, ODD[1]), (2, ODD[2])]  # fresh seqs, the same records
    assert spool_tool.lock_holder(directory, 1501) is None  # released: a hookd can adopt it
    # spool-0's own queue is untouched
    assert [decode_payload(f.payload)[0] for f in pending_frames(spool_dir(directory, 0))] == [3, 4]


def test_requeue_picks_an_index_of_at_least_1000_and_skips_a_locked_one(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD[:2], dead=2)
    busy = SpoolFiles(directory, 1000, BIG)
    busy.lock()  # e.g. another requeue, or a hookd adopting an earlier requeue's spool
    try:
        report = spool_tool.requeue(directory, BIG, [0])
    finally:
        busy.close()
    assert report.index == 1001 and report.requeued == [(0, 0), (0, 1)]
    assert spool_indexes(directory) == [0, 1001]


def test_requeue_of_chosen_seqs_only(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD, dead=3)
    config = str(config_file(tmp_path, directory))
    code, out, err = cli_run(
        capsysbinary, "spool", "requeue", "--seq", "2", "9", "--seq", "0", "--config", config
    )
    assert code == 0
    assert "requeued 2 dead letters into spool-1000" in out.decode()
    assert "no dead letter with seq 9" in err
    assert [letter.seq for letter in dead_letters(spool_dir(directory, 0))] == [1]
    assert [decode_payload(f.payload)[1] for f in pending_frames(spool_dir(directory, 1000))] == [
        ODD[0],
        ODD[2],
    ]
    code, out, _ = cli_run(capsysbinary, "spool", "requeue", "--seq", "7", "--config", config)
    assert code == 1 and "no dead letters with seq 7 to requeue" in out.decode()


def test_requeue_with_no_dead_letters_writes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD[:2])
    before = snapshot(directory)
    report = spool_tool.requeue(directory, BIG, [0])
    assert report.index is None and report.requeued == []
    assert snapshot(directory) == before


def test_a_crash_between_requeue_write_and_delete_duplicates_never_loses(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD[:3], dead=3)

    class Crash(BaseException):
        pass

    seen_when_deleting: list[list[Record]] = []

    def crash(path: Path) -> None:
        # when the first file would be deleted, the new spool is complete and released
        frames = pending_frames(spool_dir(directory, 1000))
        seen_when_deleting.append([decode_payload(f.payload)[1] for f in frames])
        assert spool_tool.lock_holder(directory, 1000) is None
        raise Crash

    with pytest.raises(Crash):
        spool_tool.requeue(directory, BIG, [0], remove=crash)
    assert seen_when_deleting == [ODD[:3]]
    assert [letter.record for letter in dead_letters(spool_dir(directory, 0))] == ODD[:3]


def test_a_failed_requeue_write_deletes_no_dead_letter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD[:3], dead=3)

    def full(self: SpoolFiles, frames: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SpoolFiles, "append", full)
    report = spool_tool.requeue(directory, BIG, [0])
    assert report.error is not None and "No space left on device" in report.error
    assert report.requeued == []
    assert len(dead_letters(spool_dir(directory, 0))) == 3


# -- drain (a scripted producer) -------------------------------------------------------------

TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
HOLD = object()  # no delivery report until purged


class ScriptedProducer:
    def __init__(self, script: Callable[[bytes], object]) -> None:
        self.script = script
        self.held: list[tuple[bytes, Callable[..., None]]] = []
        self.produced: list[tuple[str, Record]] = []
        self.stuck: list[Callable[..., None]] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        *,
        headers: list[tuple[str, bytes]],
        timestamp: int,
        buffer_error_max_tries: int,
        on_delivery: Callable[..., None],
    ) -> None:
        self.produced.append((topic, Record(topic, key, value, tuple(headers), timestamp)))
        self.held.append((value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        ready, self.held = self.held, []
        for value, report in ready:
            outcome = self.script(value)
            if outcome is HOLD:
                self.stuck.append(report)
            else:
                report(outcome, None)
        return len(ready)

    def purge(self) -> None:
        stuck, self.stuck = self.stuck, []
        for report in stuck:
            report(KafkaError(KafkaError._PURGE_QUEUE, "Local: Purged in queue"), None)

    def __len__(self) -> int:
        return len(self.held) + len(self.stuck)


class ScriptedCluster:
    def __init__(self, script: Callable[[bytes], object], up: bool = True) -> None:
        self.up = up
        self.producer_ = ScriptedProducer(script)
        self.resolved: list[str] = []

    def connect(self, timeout_s: float) -> None:
        if not self.up:
            raise ClusterError(
                f"broker not reachable within {timeout_s:g}s: Local: Broker transport failure"
            )

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        self.resolved = list(names)
        return {name: f"ws-{name}" for name in names}  # as on Quix Cloud: a prefixed name

    def topics(self, timeout_s: float) -> set[str]:
        return set()

    def producer(self, on_error: Callable[..., None]) -> ScriptedProducer:
        return self.producer_


def settings_for(directory: Path) -> Any:
    return validate({"spool": {"path": str(directory)}, "kafka": {"ack_timeout_s": 1}}, {})


def ticking() -> Callable[[], float]:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    return clock


def records(n: int, topic: str = "t") -> list[Record]:
    return [
        Record(topic, f"k{i}".encode(), f"v{i}".encode(), (("i", str(i).encode()),), i)
        for i in range(n)
    ]


def test_drain_releases_every_acked_record_and_removes_the_spool(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD)
    cluster = ScriptedCluster(lambda value: None)
    report = spool_tool.drain(
        directory, settings_for(directory), [0], cluster=cluster, connect_timeout_s=1
    )
    assert [(s.index, s.pending, s.forwarded, s.left) for s in report.spools] == [(0, 5, 5, 0)]
    assert cluster.resolved == ["odd", "other"]
    assert cluster.producer_.produced == [
        (f"ws-{r.topic}", dataclasses.replace(r, topic=f"ws-{r.topic}")) for r in ODD
    ]
    assert spool_indexes(directory) == []  # emptied, no dead letter: removed
    assert spool_tool.drain_lines(report)[-1] == "forwarded 5, left 0"


def test_drain_releases_only_up_to_the_first_record_not_acked(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, records(6))
    outcome = {b"v2": TIMED_OUT, b"v4": HOLD}
    cluster = ScriptedCluster(lambda value: outcome.get(value))
    report = spool_tool.drain(
        directory,
        settings_for(directory),
        [0],
        cluster=cluster,
        connect_timeout_s=1,
        clock=ticking(),
    )
    [spool] = report.spools
    assert (spool.forwarded, spool.left, spool.delivered_but_left) == (2, 4, 2)
    assert spool.errors == {"Local: Message timed out": 1, "Local: Purged in queue": 1}
    assert report.left == 4
    left = [decode_payload(f.payload) for f in pending_frames(spool_dir(directory, 0))]
    assert left == list(enumerate(records(6)))[2:]
    text = "\n".join(spool_tool.drain_lines(report))
    assert "6 pending, 2 forwarded, 4 left (2 of them delivered but behind" in text
    assert "left because: Local: Message timed out (1)" in text
    # the next drain forwards the rest (the two delivered ones a second time: at-least-once)
    again = ScriptedCluster(lambda value: None)
    report = spool_tool.drain(
        directory, settings_for(directory), [0], cluster=again, connect_timeout_s=1
    )
    assert [r.value for _, r in again.producer_.produced] == [r.value for r in records(6)[2:]]
    assert report.left == 0


def test_drain_sets_aside_what_the_broker_refuses_for_good(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, records(4))
    cluster = ScriptedCluster(lambda value: TOO_LARGE if value == b"v1" else None)
    report = spool_tool.drain(
        directory, settings_for(directory), [0], cluster=cluster, connect_timeout_s=1
    )
    [spool] = report.spools
    assert (spool.forwarded, spool.set_aside, spool.left, spool.dead_letters) == (3, 1, 0, 1)
    [letter] = dead_letters(spool_dir(directory, 0))
    assert (letter.seq, letter.record, letter.reason) == (
        1,
        records(4)[1],
        "Broker: Message size too large",
    )
    assert list(pending_frames(spool_dir(directory, 0))) == []
    assert "1 dead letters stay" in "\n".join(spool_tool.drain_lines(report))


def test_drain_refuses_a_spool_a_running_hookd_holds_and_touches_nothing(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, records(2), index=0)
    make_spool(directory, records(2), index=1)
    holder = SpoolFiles(directory, 1, BIG)
    holder.lock()
    try:
        before = snapshot(directory)
        cluster = ScriptedCluster(lambda value: None)
        with pytest.raises(spool_tool.SpoolHeld) as refused:
            spool_tool.drain(
                directory, settings_for(directory), [0, 1], cluster=cluster, connect_timeout_s=1
            )
        assert f"spool-1: hookd pid {os.getpid()} is running and forwards this spool itself" in str(
            refused.value
        )
        assert cluster.producer_.produced == []
        # spool-0, locked and released by the refused drain, is as it was (the lock file
        # names the last holder, the drain)
        after = snapshot(directory)
        assert {k: v for k, v in after.items() if not k.endswith(".lock")} == {
            k: v for k, v in before.items() if not k.endswith(".lock")
        }
        code, _, err = cli_run(
            capsysbinary,
            "spool",
            "drain",
            "--to-broker",
            "--config",
            str(config_file(tmp_path, directory)),
        )
        assert code == 1
        assert f"hookd pid {os.getpid()} is running and forwards this spool itself" in err
        assert "Traceback" not in err
    finally:
        holder.close()


def test_drain_with_the_broker_unreachable_leaves_every_record(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, ODD, dead=1)
    exported = list(spool_tool.export_objects(directory, [0]))
    cluster = ScriptedCluster(lambda value: None, up=False)
    with pytest.raises(
        spool_tool.ToolError, match=r"broker not reachable within 1s.*every record stays"
    ):
        spool_tool.drain(
            directory, settings_for(directory), [0], cluster=cluster, connect_timeout_s=1
        )
    assert list(spool_tool.export_objects(directory, [0])) == exported
    assert len(dead_letters(spool_dir(directory, 0))) == 1
    assert spool_tool.lock_holder(directory, 0) is None


def test_drain_of_an_empty_spool_does_not_connect(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    make_spool(directory, [])
    cluster = ScriptedCluster(lambda value: None, up=False)
    report = spool_tool.drain(
        directory, settings_for(directory), [0], cluster=cluster, connect_timeout_s=1
    )
    assert report.left == 0 and spool_indexes(directory) == []


def test_the_help_states_the_requeue_index_and_the_export_encoding(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("requeue", "export"):
        with pytest.raises(SystemExit):
            cli.main(["spool", command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(>= {spool_tool.REQUEUE_BASE_INDEX})" in text
    assert '"F_b64": "<standard base64 with padding>"' in text
