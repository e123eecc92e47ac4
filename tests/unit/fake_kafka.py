"""A fake cluster and producer for driving ``Publisher`` and ``Outbox`` without a broker.

The producer behaves as librdkafka does where it matters here: records wait until ``poll``
delivers their reports; a record over ``max_bytes`` is refused inside ``produce``; ``purge``
fails what is held with ``_PURGE_QUEUE``. The cluster decides how deliveries end: acked,
fenced (every producer made before ``fence`` fails for good), held (a stalled broker), or
missing topic (a broker restarted empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from hookd.publish.cluster import ClusterError, ErrorCallback


class FakeProducer:
    def __init__(self, cluster: FakeCluster, on_error: ErrorCallback) -> None:
        self.cluster = cluster
        self.on_error = on_error
        self.held: list[tuple[str, bytes, Callable[..., None]]] = []
        self.fenced = False

    def produce(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        if len(value) > self.cluster.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message too large"))
        self.held.append((topic, value, kwargs["on_delivery"]))

    def poll(self, timeout: float = 0) -> int:
        if self.cluster.stalled:
            return 0
        ready, self.held = self.held, []
        for topic, value, report in ready:
            report(self.cluster.deliver(self, topic, value), None)
        return len(ready)

    def purge(self) -> None:
        held, self.held = self.held, []
        for _, _, report in held:
            report(KafkaError(KafkaError._PURGE_QUEUE, "Local: Purged in queue"), None)

    def __len__(self) -> int:
        return len(self.held)


class FakeCluster:
    def __init__(self, topics: Iterable[str] = ()) -> None:
        self.up = True
        self.stalled = False
        self.existing = set(topics)
        self.max_bytes = 1000
        self.producers: list[FakeProducer] = []
        self.delivered: list[tuple[str, bytes]] = []

    # -- faults ---------------------------------------------------------------------------

    def fence(self) -> None:
        """Every producer made so far fails for good, as after a long stall."""
        for producer in self.producers:
            producer.fenced = True

    def restart_empty(self) -> None:
        self.existing.clear()
        self.fence()

    # -- the Cluster protocol -------------------------------------------------------------

    def connect(self, timeout_s: float) -> None:
        self.topics(timeout_s)

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        self.topics(0)
        self.existing |= set(names)
        return {name: name for name in names}

    def topics(self, timeout_s: float) -> set[str]:
        if not self.up or self.stalled:
            raise ClusterError("broker not reachable")
        return set(self.existing)

    def producer(self, on_error: ErrorCallback) -> FakeProducer:
        producer = FakeProducer(self, on_error)
        self.producers.append(producer)
        return producer

    def deliver(self, producer: FakeProducer, topic: str, value: bytes) -> KafkaError | None:
        if not self.up:
            return KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
        if topic not in self.existing:
            return KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
        if producer.fenced:
            return KafkaError(KafkaError.PRODUCER_FENCED, "Broker: producer fenced")
        self.delivered.append((topic, value))
        return None
