"""Topic creation checks against the cluster's broker count, over fake metadata (issue 14):
the embedded broker is a single node, so several brokers are faked here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hookd.config import topic_settings, validate
from hookd.publish import cluster as cluster_module
from hookd.publish.cluster import ClusterError, KafkaCluster

ROUTE = {"path": "/a", "topic": "t", "verify": "github", "secrets": ["s"]}


class Warnings:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, message: str, *args: object) -> None:
        self.lines.append(message % args)


def check(monkeypatch, brokers: int, kafka: dict, existing: tuple[str, ...] = ()) -> list[str]:
    config = validate({"kafka": kafka, "routes": [ROUTE]}, {})
    cluster = KafkaCluster(config, broker="127.0.0.1:1")
    metadata = SimpleNamespace(
        topics=dict.fromkeys(existing), brokers=dict.fromkeys(range(brokers))
    )
    monkeypatch.setattr(cluster, "_metadata", lambda timeout_s: metadata)
    warnings = Warnings()
    monkeypatch.setattr(cluster_module, "log", warnings)
    default = (config.kafka.topic_partitions, config.kafka.topic_replication_factor)
    cluster._check_replication(["t"], topic_settings(config), default)
    return warnings.lines


def test_replication_factor_one_on_several_brokers_is_warned_about(monkeypatch):
    [line] = check(monkeypatch, 3, {})  # unset: 1
    assert line.startswith("topic t is created with replication factor 1 on a cluster of 3")
    assert check(monkeypatch, 3, {"topic_replication_factor": 3}) == []
    assert check(monkeypatch, 1, {}) == []  # one broker: nothing better to do
    assert check(monkeypatch, 3, {}, existing=("t",)) == []  # not created by hookd


def test_replication_factor_above_the_broker_count_is_refused(monkeypatch):
    with pytest.raises(ClusterError, match="replication factor 3 is more than the cluster's 2"):
        check(monkeypatch, 2, {"topic_replication_factor": 3})
    assert check(monkeypatch, 2, {"topic_replication_factor": 3}, existing=("t",)) == []
