"""``Health``: the publisher's reading of delivery reports and probes, with the clock in hand."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from hookd.publish.health import (
    ANSWER_WINDOW_S,
    REBUILD_BACKOFF_S,
    TOPIC_RETRY_S,
    Failure,
    Health,
    classify,
)


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (KafkaError.PRODUCER_FENCED, Failure.PRODUCER),
        (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, Failure.PRODUCER),
        (KafkaError._FATAL, Failure.PRODUCER),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, Failure.TOPIC_MISSING),
        (KafkaError.MSG_SIZE_TOO_LARGE, Failure.RECORD),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, Failure.RECORD),
        (KafkaError._PURGE_INFLIGHT, Failure.LOCAL),
        (KafkaError._MSG_TIMED_OUT, Failure.UNREACHABLE),
        (KafkaError.REQUEST_TIMED_OUT, Failure.UNREACHABLE),  # unknown: the cautious reading
    ],
)
def test_classify(code, failure):
    assert classify(code) is failure


def answering_health(now: float = 0.0) -> Health:
    health = Health()
    health.probe_answered(now, frozenset({"a", "b"}), frozenset({"a", "b"}))
    return health


def test_a_fenced_producer_is_rebuilt_once_the_broker_answers():
    health = answering_health()
    health.broker_unreachable("stalled", 1.0)
    health.failed("a", Failure.PRODUCER, "fenced", 2.0)
    assert health.rebuild_due(2.0) is None  # a new producer could do no better yet
    assert health.failing_reason() == "broker not reachable: stalled"
    health.probe_answered(3.0, frozenset({"a", "b"}), frozenset({"a", "b"}))
    assert health.rebuild_due(3.0) == "fenced"
    assert health.failing_reason() == "deliveries failing: fenced"
    health.rebuilt(3.0)
    assert health.rebuild_due(3.0) is None
    assert health.failing_reason() == "deliveries failing: fenced"  # until an ack says otherwise
    health.acked("a", 3.5)
    assert health.failing_reason() is None


def test_rebuilds_back_off_while_they_do_not_help_and_an_ack_resets_that():
    health = answering_health()
    health.failed("a", Failure.UNREACHABLE, "timed out", 0.0)
    health.rebuilt(0.0)
    health.failed("a", Failure.UNREACHABLE, "timed out", 0.1)
    assert health.rebuild_due(0.1 + REBUILD_BACKOFF_S / 2) is None
    assert health.rebuild_due(0.1 + REBUILD_BACKOFF_S) == "timed out"
    health.rebuilt(1.5)  # the second within the window: the backoff doubles
    health.failed("a", Failure.UNREACHABLE, "timed out", 1.6)
    assert health.rebuild_due(1.5 + REBUILD_BACKOFF_S * 1.5) is None
    assert health.rebuild_due(1.5 + REBUILD_BACKOFF_S * 2) == "timed out"
    health.acked("a", 5.0)  # the producer delivers: nothing to rebuild, backoff reset
    assert health.rebuild_due(100.0) is None
    assert health.rebuild_backoff_s == REBUILD_BACKOFF_S


def test_a_timed_out_topic_refuses_its_own_records_for_a_while_not_the_others():
    health = answering_health()
    health.failed("a", Failure.UNREACHABLE, "Local: Message timed out", 10.0)
    assert health.refusal("a", 10.5) == "topic a unavailable: Local: Message timed out"
    assert health.refusal("b", 10.5) is None
    assert health.refusal("a", 10.0 + TOPIC_RETRY_S) is None  # tried again
    health.acked("b", 11.0)
    assert health.failing_reason() is None  # another topic delivers: not failing overall


def test_records_fail_at_once_while_the_broker_is_unreachable():
    health = answering_health()
    health.broker_unreachable("1/1 brokers are down", 5.0)
    assert health.refusal("a", 5.0) == "broker unavailable"
    assert not health.answering(5.0)
    assert health.failing_for(7.0) == 2.0
    health.probe_answered(8.0, frozenset({"a", "b"}), frozenset({"a", "b"}))
    assert health.refusal("a", 8.0) is None and health.answering(8.0)


def test_a_topic_the_broker_lost_is_refused_until_created_again_then_the_producer_rebuilt():
    health = answering_health()
    health.failed("a", Failure.UNREACHABLE, "timed out", 1.0)
    health.probe_answered(
        2.0, frozenset({"b"}), frozenset({"a", "b"})
    )  # the broker restarted empty of "a"
    assert health.topics_missing == {"a"}
    assert health.refusal("a", 100.0) is not None  # refused however long it takes
    assert health.rebuild_due(100.0) is None  # creating the topic comes first
    health.topics_created({"a"})
    assert health.refusal("a", 100.0) is None
    assert health.rebuild_due(100.0) == "timed out"


def test_record_and_local_failures_say_nothing_about_the_cluster():
    health = answering_health()
    health.failed("a", Failure.RECORD, "Broker: Message size too large", 1.0)
    health.failed("a", Failure.LOCAL, "Local: Purged in flight", 1.0)
    assert health.failing_reason() is None and health.rebuild_due(1.0) is None
    assert health.refusal("a", 1.0) is None


def test_a_fatal_error_asks_for_a_rebuild():
    health = answering_health()
    health.producer_fatal("fatal error: Local: Fatal error", 1.0)
    assert health.rebuild_due(1.0) == "fatal error: Local: Fatal error"
    assert health.failing_reason() == "deliveries failing: fatal error: Local: Fatal error"


def test_answering_needs_a_recent_ack_or_probe():
    health = answering_health(0.0)
    assert health.answering(ANSWER_WINDOW_S - 0.1)
    assert not health.answering(ANSWER_WINDOW_S)
    health.acked("a", ANSWER_WINDOW_S)
    assert health.answering(ANSWER_WINDOW_S + 1)
