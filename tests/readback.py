"""Reading a topic back up to a marker: how a test shows that something was NOT published.

Reading "for a while" and finding nothing proves little: the consumer may have started late or
the broker been slow. Instead the test has hookd publish a marker record on the same topic
after the request under test was answered, and reads until the marker arrives. hookd answers a
request only once its record is acknowledged (or refuses it), and records of one topic are
written to its single partition in the order hookd produced them, so a record the request
under test produced would come before the marker.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from embedded_broker import assign_from_start, kafka_consumer


def marker() -> bytes:
    """A body no other record has."""
    return f'{{"marker":"{uuid.uuid4().hex}"}}'.encode()


def records_before(broker_address: str, topic: str, mark: bytes, timeout: float = 20) -> list[Any]:
    """Every record of ``topic`` from its first offset up to the first one whose value is
    ``mark`` (excluded). Fails when the topic has more than one partition (order would not
    hold across partitions) or when the marker does not arrive within ``timeout``."""
    consumer = kafka_consumer(broker_address)
    records: list[Any] = []
    try:
        partitions = assign_from_start(consumer, topic)
        assert partitions == [0], f"{topic}: partitions {partitions}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            if message.value() == mark:
                return records
            records.append(message)
    finally:
        consumer.close()
    raise AssertionError(f"marker {mark!r} not in {topic} after {timeout}s ({len(records)} read)")


def values_before(broker_address: str, topic: str, mark: bytes, timeout: float = 20) -> list[bytes]:
    """The values of :func:`records_before`."""
    return [record.value() for record in records_before(broker_address, topic, mark, timeout)]
