"""The produce window: the producer is handed at most ``window_bytes`` of record values that
are not yet acknowledged, so librdkafka never holds more than a batch (beyond it, its broker
thread busy-polls). Driven by the fake cluster, with deliveries held back at will."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fake_kafka import FakeCluster
from fakes import until

from hookd.config import validate
from hookd.metrics import Metrics
from hookd.publish.cluster import produce_window_bytes
from hookd.publish.publisher import TIMED_OUT, Publisher, PublishError
from hookd.record import Record

WINDOW = 1000


class HeldCluster(FakeCluster):
    """Deliveries wait while ``stalled``; metadata still answers, so the broker stays up."""

    def topics(self, timeout_s: float) -> set[str]:
        return set(self.existing)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(size: int, tag: int) -> Record:
    return Record("t", None, bytes([tag]) * size, (), 1)


def publisher(cluster: FakeCluster, clock: Clock) -> Publisher:
    return Publisher(
        cluster,
        Metrics(),
        ack_timeout_s=2,
        topics={"t"},
        topic_names={"t": "t"},
        connected=True,
        window_bytes=WINDOW,
        clock=clock,
    )


async def settled(*futures: asyncio.Future[None]) -> None:
    """Every future resolves within 3 s (a window that never frees fails here, not hangs)."""
    await asyncio.wait_for(asyncio.gather(*futures), 3)


def held(cluster: FakeCluster, index: int = 0) -> list[bytes]:
    return [value for _, value, _ in cluster.producers[index].held]


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_the_producer_holds_at_most_a_window_and_the_rest_follows_in_order() -> None:
    async def body() -> None:
        cluster, clock = HeldCluster({"t"}), Clock()
        cluster.stalled = True
        pub = publisher(cluster, clock)
        pub.start()
        futures = [pub.publish(record(400, tag)) for tag in range(5)]
        await until(lambda: len(held(cluster)) == 2)
        await asyncio.sleep(0.02)  # several rounds of the task: no third record goes
        assert held(cluster) == [bytes([0]) * 400, bytes([1]) * 400]  # 800; 1,200 > 1,000
        cluster.stalled = False
        await settled(*futures)
        assert [value[0] for _, value in cluster.delivered] == [0, 1, 2, 3, 4]
        await pub.close(1)

    run(body)


def test_a_record_larger_than_the_window_goes_alone() -> None:
    async def body() -> None:
        cluster, clock = HeldCluster({"t"}), Clock()
        cluster.max_bytes = 10 * WINDOW
        cluster.stalled = True
        pub = publisher(cluster, clock)
        pub.start()
        big, small = pub.publish(record(3 * WINDOW, 1)), pub.publish(record(10, 2))
        await until(lambda: len(held(cluster)) == 1)
        await asyncio.sleep(0.02)
        assert held(cluster) == [bytes([1]) * 3 * WINDOW]
        cluster.stalled = False
        await settled(big, small)
        await pub.close(1)

    run(body)


def test_a_record_that_waits_past_the_ack_timeout_fails_as_librdkafka_would() -> None:
    async def body() -> None:
        cluster, clock = HeldCluster({"t"}), Clock()
        cluster.stalled = True
        pub = publisher(cluster, clock)
        pub.start()
        first = pub.publish(record(600, 1))
        waiting = [pub.publish(record(600, tag)) for tag in (2, 3)]
        await until(lambda: len(held(cluster)) == 1)
        clock.now += 2.5  # past ack_timeout_s while the window stays full
        for future in waiting:
            await until(future.done)
            error = future.exception()
            assert isinstance(error, PublishError) and str(error) == TIMED_OUT
        assert not first.done()  # its fate is librdkafka's (message.timeout.ms)
        assert held(cluster) == [bytes([1]) * 600]
        cluster.stalled = False
        await settled(first)
        await pub.close(1)

    run(body)


def test_a_rebuilt_producer_starts_with_an_empty_window() -> None:
    async def body() -> None:
        cluster, clock = HeldCluster({"t"}), Clock()
        cluster.stalled = True
        pub = publisher(cluster, clock)
        pub.start()
        old = pub.publish(record(900, 1))
        await until(lambda: len(held(cluster)) == 1)
        pub._rebuild("test")  # the old producer keeps its record until it is reported
        new = pub.publish(record(900, 2))
        await until(lambda: len(cluster.producers) == 2 and len(held(cluster, 1)) == 1)
        assert held(cluster, 0) == [bytes([1]) * 900]
        cluster.stalled = False
        await settled(old, new)
        await pub.close(1)

    run(body)


def test_the_window_is_the_producers_batch_size() -> None:
    def window(kafka: dict[str, Any]) -> int:
        route = {"path": "/r", "topic": "t", "verify": "segment", "secrets": ["s"]}
        return produce_window_bytes(validate({"kafka": kafka, "routes": [route]}, {}))

    assert window({}) == 1_000_000  # librdkafka's default batch.size
    assert window({"extra": {"batch.size": 4_000_000}}) == 4_000_000
