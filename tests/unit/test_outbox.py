"""``Outbox`` and ``Publisher`` driven by a fake cluster (``fake_kafka``): recovery, the
fallback chain, the forwarder, poison records, orphaned spool files, readiness and the close
order. The spool is the real one, in a temporary directory. The fault tests do the same
against the real broker (``tests/integration/test_faults.py``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from fake_kafka import FakeCluster
from fakes import until

from hookd.metrics import Metrics
from hookd.publish import outbox as outbox_module
from hookd.publish import publisher as publisher_module
from hookd.publish.ack import AckMode
from hookd.publish.health import Failure
from hookd.publish.outbox import PROGRESS_WINDOW_S, WEDGED_AFTER_S, Outbox
from hookd.publish.publisher import Publisher, PublishError
from hookd.publish.spool import Spool
from hookd.record import Record


class Clock:
    """The publisher's and outbox's clock, moved by the test; sleeps stay real (and short)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "PROBE_INTERVAL_S", 0.01)
    monkeypatch.setattr(outbox_module, "FORWARD_RETRY_S", 0.01)
    monkeypatch.setattr(outbox_module, "ADOPT_INTERVAL_S", 0.01)


def record(value: bytes, topic: str = "t") -> Record:
    return Record(topic, None, value, (("hookd-route", b"/r"),), 1)


def make(
    cluster: FakeCluster,
    clock: Clock,
    *,
    spool: Spool | None = None,
    connected: bool = True,
    worker_count: int = 1,
) -> Outbox:
    metrics = Metrics()
    publisher = Publisher(
        cluster,
        metrics,
        ack_timeout_s=2,
        topics={"t"},
        topic_names={"t": "t"} if connected else {},
        connected=connected,
        clock=clock,
    )
    return Outbox(publisher, spool, metrics, worker_count=worker_count, clock=clock)


async def failure(future: asyncio.Future[None]) -> PublishError:
    with pytest.raises(PublishError) as caught:
        await future
    return caught.value


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_a_fenced_producer_is_replaced_and_delivery_resumes():
    async def body() -> None:
        cluster, clock = FakeCluster({"t"}), Clock()
        outbox = make(cluster, clock)
        outbox.start()
        await outbox.commit(record(b"before"), AckMode.KAFKA)
        cluster.fence()
        error = await failure(outbox.commit(record(b"fenced"), AckMode.KAFKA))
        assert "fenced" in str(error) and error.failure is Failure.PRODUCER
        assert "deliveries failing" in (outbox.not_ready() or "")
        await until(lambda: len(cluster.producers) == 2)
        await outbox.commit(record(b"after"), AckMode.KAFKA)
        assert cluster.delivered == [("t", b"before"), ("t", b"after")]
        assert outbox.publisher._metrics.producer_rebuilds == 1
        assert outbox.not_ready() is None
        await outbox.close(1)

    run(body)


def test_fallback_spools_what_kafka_cannot_ack_and_forwards_it_after_recovery(tmp_path: Path):
    async def body() -> None:
        cluster, clock = FakeCluster({"t"}), Clock()
        outbox = make(cluster, clock, spool=await Spool.open(tmp_path, 1 << 20))
        outbox.start()
        cluster.fence()
        await outbox.commit(record(b"spooled"), AckMode.KAFKA_OR_SPOOL)  # 2xx: in the spool
        assert outbox.publisher._metrics.spooled == {"fallback": 1}
        await until(lambda: ("t", b"spooled") in cluster.delivered)
        await until(lambda: outbox.spool is not None and outbox.spool.depth == 0)
        await outbox.close(1)

    run(body)


def test_a_record_kafka_refuses_for_good_gets_503_and_is_not_spooled(tmp_path: Path):
    async def body() -> None:
        cluster, clock = FakeCluster({"t"}), Clock()
        spool = await Spool.open(tmp_path, 1 << 20)
        outbox = make(cluster, clock, spool=spool)
        outbox.start()
        error = await failure(outbox.commit(record(b"x" * 2000), AckMode.KAFKA_OR_SPOOL))
        assert error.failure is Failure.RECORD
        assert spool.depth == 0 and outbox.not_ready() is None
        await outbox.close(1)

    run(body)


def test_a_poison_record_in_the_spool_is_set_aside_and_the_rest_delivered(tmp_path: Path):
    async def body() -> None:
        cluster, clock = FakeCluster({"t"}), Clock()
        spool = await Spool.open(tmp_path, 1 << 20)
        for value in (b"one", b"x" * 2000, b"two"):
            await spool.append(record(value))
        outbox = make(cluster, clock, spool=spool)
        outbox.start()
        await until(lambda: spool.depth == 0)
        assert cluster.delivered == [("t", b"one"), ("t", b"two")]
        assert spool.dead_letters == 1
        await outbox.close(1)

    run(body)


def test_offline_start_spools_then_connects_creates_topics_and_forwards(tmp_path: Path):
    async def body() -> None:
        cluster, clock = FakeCluster(), Clock()
        cluster.up = False
        spool = await Spool.open(tmp_path, 1 << 20)
        outbox = make(cluster, clock, spool=spool, connected=False)
        outbox.start()
        await outbox.commit(record(b"offline"), AckMode.KAFKA_OR_SPOOL)
        error = await failure(outbox.commit(record(b"direct"), AckMode.KAFKA))
        assert str(error) == "broker unavailable"
        assert outbox.not_ready() is None  # the spool bridges an outage
        cluster.up = True
        await until(lambda: ("t", b"offline") in cluster.delivered)
        assert "t" in cluster.existing
        await outbox.commit(record(b"online"), AckMode.KAFKA)
        await outbox.close(1)

    run(body)


def test_a_topic_lost_by_the_broker_is_created_again_and_delivery_resumes():
    async def body() -> None:
        cluster, clock = FakeCluster({"t"}), Clock()
        outbox = make(cluster, clock)
        outbox.start()
        await outbox.commit(record(b"before"), AckMode.KAFKA)
        cluster.restart_empty()
        await failure(outbox.commit(record(b"lost"), AckMode.KAFKA))
        await until(lambda: "t" in cluster.existing and len(cluster.producers) == 2)
        await outbox.commit(record(b"after"), AckMode.KAFKA)
        assert cluster.delivered[-1] == ("t", b"after")
        await outbox.close(1)

    run(body)


def test_unready_when_the_spool_stops_draining_and_wedged_after_the_bound(tmp_path: Path):
    async def body() -> None:
        cluster, clock = FakeCluster({"t"}), Clock()
        spool = await Spool.open(tmp_path, 1 << 20)
        outbox = make(cluster, clock, spool=spool)
        real_producer = cluster.producer

        def always_fenced(on_error):  # every producer, new ones too, is fenced: a wedge
            producer = real_producer(on_error)
            producer.fenced = True
            return producer

        cluster.producer = always_fenced  # type: ignore[method-assign]
        cluster.fence()
        outbox.start()
        await outbox.commit(record(b"spooled"), AckMode.KAFKA_OR_SPOOL)
        await asyncio.sleep(0.1)  # the forwarder tries, the producer is rebuilt, tries again
        assert spool.depth == 1
        assert outbox.not_ready() is None  # the forwarder may still make progress
        clock.now += PROGRESS_WINDOW_S
        assert (
            outbox.not_ready() == "deliveries failing: Broker: producer fenced; spool not draining"
        )
        assert outbox.wedged() is None
        clock.now += WEDGED_AFTER_S
        assert "deliveries failing for" in (outbox.wedged() or "")
        await outbox.close(0.1)

    run(body)


def test_close_fails_what_kafka_holds_and_spools_the_fallbacks_first(tmp_path: Path):
    async def body() -> None:
        cluster, clock = FakeCluster({"t"}), Clock()
        spool = await Spool.open(tmp_path, 1 << 20)
        outbox = make(cluster, clock, spool=spool)
        outbox.start()
        cluster.stalled = True  # nothing is acked
        direct = outbox.commit(record(b"direct"), AckMode.KAFKA)
        fallback = outbox.commit(record(b"fallback"), AckMode.KAFKA_OR_SPOOL)
        await asyncio.sleep(0.05)
        assert await outbox.close(0.1) == 2
        assert "Purged" in str(await failure(direct))
        await fallback  # durable: in the spool before it closed
        assert spool.depth == 1

    run(body)


def test_a_spool_file_no_worker_index_owns_is_forwarded_and_removed(tmp_path: Path):
    async def body() -> None:
        orphan = await Spool.open(tmp_path, 1 << 20, worker_index=3)
        await orphan.append(record(b"orphaned"))
        await orphan.close()
        cluster, clock = FakeCluster({"t"}), Clock()
        outbox = make(cluster, clock, spool=await Spool.open(tmp_path, 1 << 20), worker_count=3)
        outbox.start()
        await until(lambda: not (tmp_path / "spool-3").exists())
        assert cluster.delivered == [("t", b"orphaned")]
        await outbox.close(1)

    run(body)


def test_a_planted_orphan_spool_is_refused_once_and_the_own_spool_still_drains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """A spool directory another local user could write is not forwarded as verified events;
    saying so once does not stop this worker's own forwarding."""

    async def body() -> None:
        planted = await Spool.open(tmp_path, 1 << 20, worker_index=7)
        await planted.append(record(b"planted"))
        await planted.close()
        os.chmod(tmp_path / "spool-7", 0o777)
        cluster, clock = FakeCluster({"t"}), Clock()
        spool = await Spool.open(tmp_path, 1 << 20)
        outbox = make(cluster, clock, spool=spool)
        outbox.start()
        for _ in range(3):
            outbox._next_adoption = 0.0  # adoption rounds as fast as the forwarder loops
            await outbox.commit(record(b"own"), AckMode.SPOOL)
            await until(lambda: not spool.depth)
        assert cluster.delivered == [("t", b"own")] * 3
        await outbox.close(1)

    run(body)
    messages = [r.getMessage() for r in caplog.records]
    refusals = [m for m in messages if "not adopting the spool of worker index 7" in m]
    assert len(refusals) == 1 and "writable by other users" in refusals[0]
