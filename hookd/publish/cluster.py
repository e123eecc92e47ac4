"""The blocking side of talking to Kafka: connection settings, topics, metadata, producers.

Every method may block on the network (the Portal API on Quix Cloud, the broker's metadata):
the publisher calls them in a thread, never on the event loop. A :class:`Cluster` is made per
process (librdkafka clients do not survive ``fork``); what can be shared across a fork -- the
connection settings and the resolved topic names -- is plain data, handed in by ``prepare``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import httpx
from confluent_kafka import KafkaError, KafkaException
from quixstreams import Application
from quixstreams.exceptions import QuixException
from quixstreams.kafka import ConnectionConfig, Producer
from quixstreams.models.topics import TopicConfig
from quixstreams.models.topics.admin import TopicAdmin

from hookd.config import Config, TopicSettings, topic_settings

log = logging.getLogger("hookd")

#: A bootstrap address, or Quix Cloud's connection settings.
Broker = str | ConnectionConfig
ErrorCallback = Callable[[KafkaError], None]


class ClusterError(Exception):
    """The cluster (or the Quix Portal API) could not be reached or refused; says why."""


class ProducerLike(Protocol):
    """What the publisher uses of ``quixstreams.kafka.Producer`` (a fake can stand in)."""

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
    ) -> None: ...

    def poll(self, timeout: float = 0) -> int: ...

    def purge(self) -> None: ...

    def __len__(self) -> int: ...


class Cluster(Protocol):
    """What the publisher needs from the cluster; :class:`KafkaCluster` is the real one."""

    def connect(self, timeout_s: float) -> None:
        """Get the connection settings and check the broker answers; ``ClusterError`` if not."""

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """Create or look up topics: configured name → the name to produce to."""

    def topics(self, timeout_s: float) -> set[str]:
        """The topics that exist (a metadata request); ``ClusterError`` if no answer."""

    def producer(self, on_error: ErrorCallback) -> ProducerLike:
        """A new producer; only after ``connect`` succeeded."""


def producer_config(config: Config) -> dict[str, str | int | float | bool]:
    kafka = config.kafka
    return {
        "linger.ms": kafka.linger_ms,
        **kafka.extra,
        # librdkafka reports a delivery failure at this deadline, so a request never waits
        # longer than ack_timeout_s for its answer.
        "message.timeout.ms": int(kafka.ack_timeout_s * 1000),
        "acks": "all",
        "enable.idempotence": True,
    }


class KafkaCluster:
    """A plain Kafka cluster, or Quix Cloud when the config gives no broker address and Quix
    injected its token (quixstreams reads ``Quix__Sdk__Token`` / ``Quix__Portal__Api``)."""

    def __init__(self, config: Config, broker: Broker | None = None) -> None:
        """``broker``: connection settings already obtained (by ``prepare``, before a fork)."""
        self._config = config
        self._settings = producer_config(config)
        self.broker = broker
        self._app: Application | None = None
        self._admin: TopicAdmin | None = None

    def _application(self) -> Application:
        if self._app is None:
            try:
                self._app = Application(
                    broker_address=self._config.kafka.broker(os.environ),
                    producer_extra_config=self._settings,
                    loglevel=None,  # its records go through hookd's handler (hookd.logs)
                    auto_create_topics=self._config.kafka.create_topics,
                )
            except (QuixException, httpx.HTTPError, ValueError) as exc:
                # Only Quix Cloud mode talks to anything here: the Portal API refused the
                # token or workspace, was unreachable after quixstreams' retries (httpx), or
                # Quix__Portal__Api is missing or its answer invalid (ValueError).
                raise ClusterError(
                    f"cannot get the connection settings from Quix Cloud: {exc}"
                ) from None
        return self._app

    def connect(self, timeout_s: float) -> None:
        if self.broker is None:
            self.broker = self._application().config.broker_address
        try:
            self.topics(timeout_s)
        except ClusterError as exc:
            raise ClusterError(f"broker not reachable within {timeout_s:g}s: {exc}") from None

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """On Quix Cloud the real name carries the workspace prefix: produce to ``topic.name``.

        A missing topic is created with its route's settings (``[kafka] topic_partitions`` and
        ``topic_replication_factor``, or the route's own); unset, quixstreams' defaults (1 and
        1) on plain Kafka and the Portal's on Quix Cloud. On plain Kafka a replication factor
        above the cluster's broker count is refused, and 1 on several brokers is warned about.
        With ``create_topics = false`` a missing topic is an error."""
        app = self._application()
        wanted = sorted(names)
        settings = topic_settings(self._config)
        default = (self._config.kafka.topic_partitions, self._config.kafka.topic_replication_factor)
        quix = self._config.kafka.broker(os.environ) is None
        if not quix and self._config.kafka.create_topics:
            self._check_replication(wanted, settings, default)
        resolved: dict[str, str] = {}
        for name in wanted:
            partitions, replication = settings.get(name, default)
            if quix and partitions is None and replication is None:
                config = None  # the Portal's defaults
            else:
                config = TopicConfig(
                    num_partitions=partitions if quix else partitions or 1,
                    replication_factor=replication if quix else replication or 1,
                )
            try:
                topic = app.topic(
                    name, value_serializer="bytes", key_serializer="bytes", config=config
                )
            except Exception as exc:  # quixstreams raises assorted types for a broker in trouble
                if not self._config.kafka.create_topics:
                    raise ClusterError(
                        f"cannot look up topic {name!r} (kafka.create_topics = false: hookd "
                        f"does not create it): {exc}"
                    ) from exc
                raise ClusterError(f"cannot create or look up topic {name!r}: {exc}") from exc
            resolved[name] = topic.name
        return resolved

    def _check_replication(
        self, names: list[str], settings: dict[str, TopicSettings], default: TopicSettings
    ) -> None:
        """Before creating topics on plain Kafka: a replication factor the cluster cannot
        hold is refused (the broker would refuse it too, less clearly), and 1 on a cluster of
        several brokers is warned about (one broker lost, the topic is unavailable)."""
        metadata = self._metadata(self._config.kafka.connect_timeout_s)
        missing = [name for name in names if name not in metadata.topics]
        brokers = len(metadata.brokers)
        for name in missing:
            replication = settings.get(name, default)[1] or 1
            if replication > brokers:
                raise ClusterError(
                    f"topic {name!r}: replication factor {replication} is more than the "
                    f"cluster's {brokers} broker(s); lower topic_replication_factor"
                )
            if replication == 1 and brokers > 1:
                log.warning(
                    "topic %s is created with replication factor 1 on a cluster of %d brokers: "
                    "it is lost with one broker; set kafka.topic_replication_factor",
                    name,
                    brokers,
                )

    def _metadata(self, timeout_s: float) -> Any:
        if self.broker is None:
            raise ClusterError("no connection settings yet")
        if self._admin is None:
            # Connects like the producer (SASL, TLS and the rest of [kafka.extra]).
            self._admin = TopicAdmin(broker_address=self.broker, extra_config=self._settings)
        try:
            return self._admin.admin_client.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            raise ClusterError(error.str() if isinstance(error, KafkaError) else str(exc)) from None

    def topics(self, timeout_s: float) -> set[str]:
        return set(self._metadata(timeout_s).topics)

    def producer(self, on_error: ErrorCallback) -> ProducerLike:
        assert self.broker is not None, "connect() first"
        return Producer(
            broker_address=self.broker, extra_config=self._settings, error_callback=on_error
        )
