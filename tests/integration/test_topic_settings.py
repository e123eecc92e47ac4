"""Topic creation settings, read back from the embedded broker (issue 14).

Tansu is a single broker: partitions can be read back; a replication factor above 1 is what
hookd must refuse here, before asking the broker (Tansu itself would accept it)."""

from __future__ import annotations

from embedded_broker import kafka_consumer
from http_client import request, segment_request
from support import unique_topic


def partitions(broker_address: str, topic: str) -> int:
    consumer = kafka_consumer(broker_address)
    try:
        return len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    finally:
        consumer.close()


def route(path: str, topic: str, **extra: object) -> dict[str, object]:
    return {"path": path, "topic": topic, "verify": "segment", "secrets": ["s"], **extra}


def test_topics_are_created_with_the_configured_partitions(broker, start_hookd):
    default, override, plain = unique_topic(), unique_topic(), unique_topic()
    hookd = start_hookd(
        [route("/a", default), route("/b", override, topic_partitions=2)],
        kafka={"topic_partitions": 3, "topic_replication_factor": 1},
    )
    assert partitions(broker.address, default) == 3
    assert partitions(broker.address, override) == 2
    assert request(hookd.address, segment_request("/b", b"{}", b"s")).status == 200
    start_hookd([route("/c", plain)])  # nothing set: one partition, as before
    assert partitions(broker.address, plain) == 1


def test_a_replication_factor_above_the_broker_count_is_refused(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([route("/a", topic)], kafka={"topic_replication_factor": 2}, ready=False)
    assert hookd.wait(60) == 1
    log = hookd.log()
    assert f"topic '{topic}': replication factor 2 is more than the cluster's 1 broker(s)" in log
    consumer = kafka_consumer(broker.address)
    try:
        assert topic not in consumer.list_topics(timeout=10).topics
    finally:
        consumer.close()


def test_create_topics_false_does_not_create_a_missing_topic(broker, start_hookd):
    topic = unique_topic()
    hookd = start_hookd([route("/a", topic)], kafka={"create_topics": False}, ready=False)
    assert hookd.wait(60) == 1
    assert "kafka.create_topics = false" in hookd.log()
    # with the topic there, it starts and publishes
    start_hookd([route("/a", topic)])  # creates it
    again = start_hookd([route("/a", topic)], kafka={"create_topics": False})
    assert request(again.address, segment_request("/a", b"{}", b"s")).status == 200
