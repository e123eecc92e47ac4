"""``hookd spool`` as an operator runs it (``python -m hookd.cli spool …``, a process of its
own) against spools that a running hookd holds or that a stopped one left, and against the
embedded broker: what it reports, what it changes, and what reaches Kafka."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import embedded_broker
from embedded_broker import read_topic, wait_for
from http_client import request, segment_request
from support import ROOT, Launcher, metric, render_config, unique_topic

from hookd.publish.segments import dead_letters, spool_dir, spool_indexes
from hookd.publish.spool import Spool
from hookd.record import Record
from hookd.spool_tool import record_from_json

SECRET = b"tool"


def route(topic: str, **extra: object) -> dict[str, object]:
    return {"path": "/in", "topic": topic, "verify": "segment", "secrets": ["tool"], **extra}


def spool_cli(config: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd.cli", "spool", *argv, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def write_config(path: Path, spool: Path, broker_address: str, **kafka: object) -> Path:
    path.write_text(
        render_config(
            {},
            {"broker_address": broker_address, "ack_timeout_s": 5, **kafka},
            [route("unused")],
            {"path": str(spool)},
        )
    )
    return path


def odd_records(topic: str, tag: str) -> list[Record]:
    """Bytes that catch a lossy path: empty and binary values, an empty key next to no key,
    bytes that are not UTF-8, duplicate header names, an empty header value, an empty value."""
    now = int(time.time() * 1000)
    return [
        Record(topic, None, f'{{"{tag}":0}}'.encode(), (("hookd-route", b"/in"),), now - 4000),
        Record(
            topic,
            b"",
            b"\xff\x00\xfe" + tag.encode(),
            (("dup", b"1"), ("dup", b"\xfe")),
            now - 3000,
        ),
        Record(topic, "clé".encode(), f"héllo {tag}".encode(), (("empty", b""),), now - 2000),
        Record(
            topic,
            b"\xed\xa0\x80",
            b"\xc0\xaf" + tag.encode(),
            (("bin", bytes(range(256))),),
            now - 1000,
        ),
        Record(topic, tag.encode(), b"", (("dup", b"a"), ("dup", b"a")), now - 500),
    ]


def make_spool(directory: Path, records: list[Record], dead: int = 0, index: int = 0) -> None:
    """A stopped spool with ``records``; the first ``dead`` are set aside as dead letters."""

    async def fill() -> None:
        spool = await Spool.open(directory, 1 << 30, index)
        for record in records:
            await spool.append(record)
        if dead:
            await spool.set_aside(list(range(dead)), "refused for good: test")
        await spool.close()

    asyncio.run(fill())


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def as_record(message: Any) -> Record:
    """A consumed message as the Record it was produced from (empty header lists read back as
    None from librdkafka)."""
    headers = tuple((name, value) for name, value in (message.headers() or []))
    return Record(message.topic(), message.key(), message.value(), headers, message.timestamp()[1])


def read_records(broker_address: str, topic: str, expected: int) -> list[Record]:
    return [as_record(m) for m in read_topic(broker_address, topic, expected, timeout=30)]


def test_status_export_and_drain_on_a_spool_a_running_hookd_holds(tmp_path):
    """hookd offline (no broker) with an ack = "spool" route keeps what it accepts in its
    spool. status shows the records and the holder's pid, export gives them back, drain
    refuses; none of them changes a byte of the spool."""
    port = embedded_broker.free_port()  # nothing listens there
    launcher = Launcher(None, tmp_path)
    spool = tmp_path / "spool"
    topic = unique_topic("live")
    hookd = launcher.start(
        [route(topic, ack="spool")],
        kafka={"connect_timeout_s": 1},
        broker_address=f"127.0.0.1:{port}",
        spool={"path": str(spool)},
        ready=False,
    )
    try:

        def send(body: bytes) -> int:
            try:
                return request(hookd.address, segment_request("/in", body, SECRET)).status
            except OSError:
                return 0

        assert wait_for(lambda: send(b'{"n":-1}') == 200, 60, 0.1), hookd.log()
        bodies = [b'{"n":-1}', *(f'{{"n":{n},"x":"\\u00e9"}}'.encode() for n in range(20))]
        assert all(send(body) == 200 for body in bodies[1:])
        config = hookd.config_path
        before = snapshot(spool)

        shown = spool_cli(config, "status", "--json")
        assert shown.returncode == 0, shown.stderr
        [one] = json.loads(shown.stdout)["spools"]
        assert (one["index"], one["depth"], one["dead_letters"]) == (0, len(bodies), 0)
        assert one["held_by_pid"] == hookd.process.pid
        assert 0 <= one["oldest_age_s"] < 120 and one["bytes"] > sum(map(len, bodies))
        table = spool_cli(config, "status")
        assert table.returncode == 0 and f"hookd pid {hookd.process.pid}" in table.stdout

        exported = spool_cli(config, "export")
        assert exported.returncode == 0, exported.stderr
        rows = [record_from_json(json.loads(line)) for line in exported.stdout.splitlines()]
        assert [record.value for _, _, record in rows] == bodies
        assert [seq for _, seq, _ in rows] == list(range(len(bodies)))
        assert all(record.topic == topic for _, _, record in rows)

        refused = spool_cli(config, "drain", "--to-broker")
        assert refused.returncode == 1
        assert (
            f"spool-0: hookd pid {hookd.process.pid} is running and forwards this spool itself"
            in refused.stderr
        )
        assert "Traceback" not in refused.stderr

        assert snapshot(spool) == before
        assert hookd.process.poll() is None
        assert metric(hookd.admin_port, "hookd_spool_depth") == len(bodies)
    finally:
        launcher.stop_all()


def test_requeue_on_a_stopped_spool_then_hookd_forwards_it(broker, start_hookd, tmp_path):
    spool = tmp_path / "spool"
    topic = unique_topic("requeue-stopped")
    records = odd_records(topic, "stopped")
    make_spool(spool, records, dead=2)  # two dead letters, three records waiting
    config = write_config(tmp_path / "tool.toml", spool, broker.address)

    done = spool_cli(config, "requeue")
    assert done.returncode == 0, done.stderr
    assert "requeued 2 dead letters into spool-1000" in done.stdout
    assert dead_letters(spool_dir(spool, 0)) == []
    shown = json.loads(spool_cli(config, "status", "--json").stdout)["spools"]
    assert [(s["index"], s["depth"], s["dead_letters"]) for s in shown] == [(0, 3, 0), (1000, 2, 0)]

    hookd = start_hookd([route(topic)], spool={"path": str(spool)})
    arrived = read_records(broker.address, topic, 5)
    assert sorted(arrived, key=lambda r: r.timestamp_ms) == records
    assert wait_for(lambda: spool_indexes(spool) == [0], 20)  # spool-1000 adopted, removed
    assert metric(hookd.admin_port, "hookd_spool_dead_letters") == 0


def test_requeue_while_hookd_runs_is_adopted_and_forwarded(broker, start_hookd, tmp_path):
    spool = tmp_path / "spool"
    topic = unique_topic("requeue-live")
    records = odd_records(topic, "live")
    make_spool(spool, records, dead=2)
    hookd = start_hookd([route(topic)], spool={"path": str(spool)})
    # hookd forwards the three waiting records; the dead letters stay
    first = read_records(broker.address, topic, 3)
    assert first == records[2:]
    assert wait_for(lambda: metric(hookd.admin_port, "hookd_spool_dead_letters") == 2, 10)

    requeued_at = time.monotonic()
    done = spool_cli(hookd.config_path, "requeue")
    assert done.returncode == 0, done.stderr
    assert "requeued 2 dead letters into spool-1000" in done.stdout
    arrived = read_records(broker.address, topic, 5)
    print(f"\nrequeued dead letters in Kafka {time.monotonic() - requeued_at:.1f}s after requeue")
    assert arrived[:3] == records[2:]
    assert sorted(arrived[3:], key=lambda r: r.timestamp_ms) == records[:2]
    assert wait_for(lambda: spool_indexes(spool) == [0], 20)
    assert dead_letters(spool_dir(spool, 0)) == []
    # (hookd_spool_dead_letters is not asserted: an idle spool's writer recounts dead letters
    # only when it next processes something, so the gauge can stay at 2 for a while)
    assert "adopting" in hookd.log()


def test_drain_forwards_a_stopped_spool_exactly(broker, tmp_path):
    spool = tmp_path / "spool"
    first, second = unique_topic("drain-a"), unique_topic("drain-b")
    records_a = odd_records(first, "a")
    records_b = odd_records(second, "b")
    make_spool(spool, records_a, dead=1, index=0)
    make_spool(spool, records_b[:2], index=3)
    make_spool(spool, records_b[2:], index=1000)  # e.g. a requeue no hookd adopted
    config = write_config(tmp_path / "tool.toml", spool, broker.address)

    done = spool_cli(config, "drain", "--to-broker")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "forwarded 9, left 0" in done.stdout
    assert "spool-0: 4 pending, 4 forwarded, 0 left; 1 dead letters stay" in done.stdout
    assert read_records(broker.address, first, 4) == records_a[1:]
    assert read_records(broker.address, second, 5) == records_b
    # emptied spools are removed; spool-0 keeps its dead letter
    assert spool_indexes(spool) == [0]
    [letter] = dead_letters(spool_dir(spool, 0))
    assert letter.record == records_a[0]
    shown = json.loads(spool_cli(config, "status", "--json").stdout)["spools"]
    assert [(s["index"], s["depth"], s["dead_letters"]) for s in shown] == [(0, 0, 1)]


def test_drain_with_the_broker_unreachable_leaves_every_record(tmp_path):
    spool = tmp_path / "spool"
    records = odd_records(unique_topic("drain-down"), "down")
    make_spool(spool, records, dead=1)
    config = write_config(tmp_path / "tool.toml", spool, f"127.0.0.1:{embedded_broker.free_port()}")
    exported = spool_cli(config, "export").stdout
    assert len(exported.splitlines()) == 4
    segments_before = {k: v for k, v in snapshot(spool).items() if k.endswith(".log")}

    started = time.monotonic()
    done = spool_cli(config, "drain", "--to-broker", "--connect-timeout", "2")
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    assert "error: broker not reachable within 2s" in done.stderr
    assert "every record stays in the spool" in done.stderr
    assert "Traceback" not in done.stderr
    assert spool_cli(config, "export").stdout == exported
    assert {k: v for k, v in snapshot(spool).items() if k.endswith(".log")} == segments_before
    assert len(dead_letters(spool_dir(spool, 0))) == 1
