"""What the publisher knows of the cluster, and when it must act: sans-IO, clock passed in.

The publisher feeds every delivery report, broker error and metadata probe into
:class:`Health`; Health answers three questions the IO shell acts on:

* :meth:`Health.refusal` -- should a new record for this topic fail at once (503, or the
  spool) instead of waiting ``ack_timeout_s`` for a delivery that cannot happen?
* :meth:`Health.rebuild_due` -- must the producer be replaced? librdkafka does not always
  recover by itself: after a stall longer than ``message.timeout.ms`` the idempotent producer
  can stay fenced for good (``PRODUCER_FENCED`` on every later record, never marked fatal),
  and after a broker restart it keeps a producer id the new cluster does not know. So any
  delivery failure that is the cluster's (not the record's, not a purge) asks for a fresh
  producer, built once the broker answers metadata again; rebuilding is cheap and the old
  producer keeps delivering what it holds, so a needless rebuild costs nothing but a log line.
* :meth:`Health.failing` -- are deliveries failing right now (for ``/readyz``)?

Health is per topic where the cause is the topic's (a timed-out or missing topic refuses
only its own records) and per broker where it is the broker's (unreachable: every record).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import KafkaError


class Failure(enum.Enum):
    """What a failed delivery says about where the trouble is."""

    #: The broker or the topic's leader did not answer in time: the topic is refused a while.
    UNREACHABLE = "unreachable"
    #: The producer's own state is broken (fenced, sequence gap, fatal): rebuild it.
    PRODUCER = "producer"
    #: The topic does not exist (a broker restarted empty): create it again, then rebuild.
    TOPIC_MISSING = "topic missing"
    #: This record can never be written (too large, not authorized, invalid topic): poison.
    RECORD = "record"
    #: Nothing about the cluster: the local queue was full or purged on purpose.
    LOCAL = "local"


_PRODUCER_STATE: Final = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.INVALID_PRODUCER_ID_MAPPING,
        KafkaError._FENCED,
        KafkaError._FATAL,
        KafkaError._INCONSISTENT,
        KafkaError._GAPLESS_GUARANTEE,
    }
)
_TOPIC_MISSING: Final = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
)
_RECORD: Final = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
        KafkaError._INVALID_ARG,
    }
)
_LOCAL: Final = frozenset(
    {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._QUEUE_FULL}
)


def classify(code: int) -> Failure:
    """The kind of a delivery failure from its librdkafka error code; anything unknown is
    treated as the broker not answering (the cautious reading: refuse a while, retry)."""
    if code in _PRODUCER_STATE:
        return Failure.PRODUCER
    if code in _TOPIC_MISSING:
        return Failure.TOPIC_MISSING
    if code in _RECORD:
        return Failure.RECORD
    if code in _LOCAL:
        return Failure.LOCAL
    return Failure.UNREACHABLE


_NONE: Final[frozenset[str]] = frozenset()

#: A topic whose deliveries timed out is refused this long, then tried again.
TOPIC_RETRY_S: Final = 2.0
#: Least time between two rebuilds; doubles while rebuilding does not help, up to the maximum.
REBUILD_BACKOFF_S: Final = 1.0
REBUILD_BACKOFF_MAX_S: Final = 30.0
#: The broker counts as answering if an ack or a probe came within this window.
ANSWER_WINDOW_S: Final = 10.0


@dataclass(slots=True)
class _Trouble:
    since: float
    reason: str


@dataclass
class Health:
    """The cluster as the delivery reports and probes describe it; every method takes ``now``
    (monotonic seconds) so that tests drive the clock."""

    #: Set while the broker is unreachable (all brokers down, or a metadata probe failed).
    broker_down: _Trouble | None = None
    last_ack_at: float | None = None
    last_probe_ok_at: float | None = None
    #: The first delivery failure since the last ack (cleared by an ack).
    failing: _Trouble | None = None
    #: Topics refused for a while after their deliveries timed out, or missing on the broker.
    topics_down: dict[str, _Trouble] = field(default_factory=dict)
    #: Topics the broker said do not exist; the publisher creates them again.
    topics_missing: set[str] = field(default_factory=set)
    #: Why the producer must be replaced, as soon as the broker answers.
    rebuild_reason: str | None = None
    last_rebuild_at: float | None = None
    rebuild_backoff_s: float = REBUILD_BACKOFF_S

    # -- what happened ----------------------------------------------------------------------

    def acked(self, topic: str, now: float) -> None:
        self.last_ack_at = now
        self.failing = None
        self.rebuild_reason = None  # this producer delivers: keep it
        self.topics_down.pop(topic, None)
        self.rebuild_backoff_s = REBUILD_BACKOFF_S

    def failed(self, topic: str, failure: Failure, reason: str, now: float) -> None:
        """A delivery report (or a refused ``produce``) with an error."""
        if failure in (Failure.LOCAL, Failure.RECORD):
            return  # says nothing about the cluster
        if self.failing is None:
            self.failing = _Trouble(now, reason)
        self.rebuild_reason = self.rebuild_reason or reason
        if failure is Failure.PRODUCER:
            return
        if failure is Failure.TOPIC_MISSING:
            self.topics_missing.add(topic)
        if topic not in self.topics_down:
            self.topics_down[topic] = _Trouble(now, reason)
        else:
            self.topics_down[topic].since = now  # refused again for the whole retry delay

    def broker_unreachable(self, reason: str, now: float) -> None:
        """All brokers down, or a metadata probe failed."""
        if self.broker_down is None:
            self.broker_down = _Trouble(now, reason)

    def probe_answered(
        self,
        now: float,
        existing: frozenset[str] = frozenset(),
        wanted: frozenset[str] = frozenset(),
    ) -> None:
        """The broker answered (a connection or a metadata probe), with the topics that exist;
        ``wanted`` are the real names of the topics hookd produces to."""
        self.broker_down = None
        self.last_probe_ok_at = now
        gone = wanted - existing
        self.topics_missing |= gone
        for topic in gone:
            self.topics_down.setdefault(topic, _Trouble(now, "topic not on the broker"))

    def topics_created(self, topics: set[str]) -> None:
        """Missing topics exist again: take their records, with a fresh producer (one that
        knew the old cluster may keep failing on the new one)."""
        self.topics_missing -= topics
        for topic in topics:
            self.topics_down.pop(topic, None)
        self.rebuild_reason = self.rebuild_reason or "topics created again"

    def producer_fatal(self, reason: str, now: float) -> None:
        """librdkafka raised a fatal error: this producer will never deliver again."""
        self.failing = self.failing or _Trouble(now, reason)
        self.rebuild_reason = reason

    def rebuilt(self, now: float) -> None:
        """A fresh producer took over; topics that timed out are tried again at once.
        Deliveries count as failing until the first ack: a rebuild that does not help must not
        hide a wedge from readiness and liveness."""
        self.rebuild_reason = None
        self.topics_down = {t: d for t, d in self.topics_down.items() if t in self.topics_missing}
        if self.last_rebuild_at is not None and now - self.last_rebuild_at < ANSWER_WINDOW_S * 3:
            self.rebuild_backoff_s = min(self.rebuild_backoff_s * 2, REBUILD_BACKOFF_MAX_S)
        self.last_rebuild_at = now

    # -- what to do -------------------------------------------------------------------------

    def refusal(self, topic: str, now: float) -> str | None:
        """Why a new record for ``topic`` fails at once, or ``None`` to produce it."""
        if self.broker_down is not None:
            return "broker unavailable"
        down = self.topics_down.get(topic)
        if down is not None and (topic in self.topics_missing or now - down.since < TOPIC_RETRY_S):
            return f"topic {topic} unavailable: {down.reason}"
        return None

    def rebuild_due(self, now: float) -> str | None:
        """Why the producer must be replaced now, or ``None``. Never while the broker is
        unreachable or topics are missing (a new producer could do no better), never twice
        within the backoff."""
        if self.broker_down is not None or self.topics_missing:
            return None
        if self.last_rebuild_at is not None and now - self.last_rebuild_at < self.rebuild_backoff_s:
            return None
        return self.rebuild_reason

    def answering(self, now: float) -> bool:
        """The broker answered recently (an ack or a probe) and is not known unreachable."""
        times = [t for t in (self.last_ack_at, self.last_probe_ok_at) if t is not None]
        return self.broker_down is None and bool(times) and now - max(times) < ANSWER_WINDOW_S

    def failing_reason(self) -> str | None:
        """Why deliveries are failing now, or ``None``."""
        if self.broker_down is not None:
            return f"broker not reachable: {self.broker_down.reason}"
        if self.failing is not None:
            return f"deliveries failing: {self.failing.reason}"
        return None

    def failing_for(self, now: float) -> float:
        """How long deliveries have been failing (0 when they are not)."""
        since = [t.since for t in (self.broker_down, self.failing) if t is not None]
        return now - min(since) if since else 0.0
