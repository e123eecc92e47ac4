"""The batching publisher: hands records to the Kafka producer on the loop thread, and keeps
that producer delivering whatever happens to the cluster.

Request handlers call ``publish`` and await the returned future. A single task produces what
has queued since it last ran (one wake-up per batch, not per request) and polls the producer
for delivery reports while anything is in flight; each report resolves its request's future.
The loop never blocks on the producer: ``produce`` never retries a full queue, ``poll`` is
always called with a zero timeout, and everything that talks to the network on its own
(connecting, metadata probes, creating topics) runs in a thread.

A second task, the recovery task, acts on what :class:`~hookd.publish.health.Health` learns
from the delivery reports: it connects when hookd started without its broker, probes metadata
when no ack came lately, creates topics the broker lost, and replaces a producer that stopped
delivering. A replaced producer is retired, not destroyed: it keeps delivering what it holds
until its records are acked or time out, so a rebuild loses nothing and hangs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message

from hookd.metrics import Metrics
from hookd.publish.cluster import Cluster, ClusterError, ProducerLike
from hookd.publish.health import Failure, Health, classify
from hookd.record import Record

log = logging.getLogger("hookd.publish")

#: How often delivery reports are collected while records are in flight.
POLL_INTERVAL_S = 0.001
#: The recovery task's period; without an ack for this long it probes the broker's metadata.
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
#: Beyond the ack timeout, how long a retired producer may keep its last records.
RETIRE_MARGIN_S = 1.0


class PublishError(Exception):
    """The record is not durable. The request is answered 503 with ``Retry-After``.

    ``failure`` says why, when the broker said: ``Failure.RECORD`` means this record can never
    be written (the spool forwarder sets it aside instead of retrying it forever).
    """

    def __init__(self, reason: str, failure: Failure | None = None) -> None:
        super().__init__(reason)
        self.failure = failure


@dataclass(slots=True)
class _Retired:
    producer: ProducerLike
    deadline: float


class Publisher:
    """Produces records in batches and resolves a future per record from its delivery report.

    Records name their route's topic as configured; ``topic_names`` maps it to the name the
    cluster uses (on Quix Cloud, workspace-prefixed). A configured topic the map lacks (hookd
    started offline, or a reload added it) is created or looked up by the recovery task, and
    its records fail fast until then.
    """

    def __init__(
        self,
        cluster: Cluster,
        metrics: Metrics,
        *,
        ack_timeout_s: float,
        topics: Iterable[str],
        topic_names: dict[str, str],
        connected: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``connected``: ``prepare`` reached the broker (a producer is made at once);
        otherwise the recovery task connects when it can."""
        self._cluster = cluster
        self._metrics = metrics
        self._ack_timeout_s = ack_timeout_s
        self._clock = clock
        self._wanted = set(topics)
        self._names = dict(topic_names)
        self.health = Health()
        self._producer: ProducerLike | None = None
        self._generation = 0
        self._retired: list[_Retired] = []
        self._queue: deque[tuple[Record, asyncio.Future[None], float]] = deque()
        self._wake = asyncio.Event()
        self._recover_now = asyncio.Event()
        self._in_flight = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._unreachable_logged = False
        if connected:
            self._producer = cluster.producer(partial(self._on_producer_error, 0))
            self.health.probe_answered(clock())
        else:
            self.health.broker_unreachable("not reached since start-up", clock())

    # -- request side ---------------------------------------------------------------------

    def publish(self, record: Record) -> asyncio.Future[None]:
        """Queue a record; the future resolves when Kafka acknowledged it, or fails with
        ``PublishError``. Fails at once when the record cannot be delivered now: closing, the
        broker unreachable, its topic not created yet or refused a while after it timed out."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        refusal = self.refusal(record.topic)
        if refusal is not None:
            future.set_exception(PublishError(refusal))
        else:
            self._queue.append((record, future, self._clock()))
            self._wake.set()
        return future

    def refusal_for_all(self) -> str | None:
        """Why every record would fail at once (closing, broker unreachable), or ``None``."""
        if self._closing:
            return "shutting down"
        if self._producer is None or self.health.broker_down is not None:
            return "broker unavailable"
        return None

    def refusal(self, topic: str) -> str | None:
        """Why a record for this configured topic would fail at once, or ``None``."""
        if (refusal := self.refusal_for_all()) is not None:
            return refusal
        real = self._names.get(topic)
        if real is None:
            # A route's topic not resolved yet, or the topic of a record spooled under an
            # earlier config: the recovery task creates or looks it up.
            self.want_topics((topic,))
            return f"topic {topic} not created yet"
        return self.health.refusal(real, self._clock())

    def want_topics(self, topics: Iterable[str]) -> None:
        """Topics a reload added: the recovery task creates or looks them up."""
        added = set(topics) - self._wanted
        if added:
            self._wanted |= added
            self._recover_now.set()

    # -- the tasks ------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="hookd-publisher")
        self._recovery = loop.create_task(self._recover(), name="hookd-recovery")

    async def _run(self) -> None:
        while True:
            if not self._queue and not self._in_flight:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            self._produce_queued()
            if self._producer is not None:
                self._producer.poll(0)
            if self._retired:
                self._poll_retired()
            if self._in_flight:
                await asyncio.sleep(POLL_INTERVAL_S)

    def _produce_queued(self) -> None:
        queue, producer, generation = self._queue, self._producer, self._generation
        while queue:
            record, future, queued_at = queue.popleft()
            if future.done():  # the client went away before we got to it
                continue
            topic = self._names.get(record.topic)
            if producer is None or topic is None:
                self._fail(future, "broker unavailable")
                continue
            try:
                producer.produce(
                    topic,
                    record.value,
                    record.key,
                    headers=list(record.headers),
                    timestamp=record.timestamp_ms,
                    buffer_error_max_tries=0,
                    on_delivery=partial(self._delivered, future, queued_at, topic, generation),
                )
            except BufferError:
                self._fail(future, "local producer queue full")
                continue
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError):
                    self._failed(future, topic, generation, error)
                else:
                    self._fail(future, "produce failed")
                continue
            except Exception as exc:  # never let one record stop the task the others wait on
                log.exception("produce failed")
                self._fail(future, f"produce failed: {type(exc).__name__}")
                continue
            self._in_flight += 1

    def _delivered(
        self,
        future: asyncio.Future[None],
        queued_at: float,
        topic: str,
        generation: int,
        error: KafkaError | None,
        message: Message,
    ) -> None:
        self._in_flight -= 1
        if error is not None:
            self._failed(future, topic, generation, error)
            return
        now = self._clock()
        if generation == self._generation:
            self.health.acked(topic, now)
        self._metrics.observe_publish(now - queued_at)
        if not future.done():
            future.set_result(None)

    def _failed(
        self, future: asyncio.Future[None], topic: str, generation: int, error: KafkaError
    ) -> None:
        failure = classify(error.code())
        if generation == self._generation:  # a retired producer's failures are expected
            self.health.failed(topic, failure, error.str(), self._clock())
            if failure is not Failure.LOCAL and failure is not Failure.RECORD:
                self._recover_now.set()
        self._fail(future, error.str(), failure)

    def _fail(
        self, future: asyncio.Future[None], reason: str, failure: Failure | None = None
    ) -> None:
        self._metrics.delivery_failed(reason)
        if not future.done():
            future.set_exception(PublishError(reason, failure))

    def _on_producer_error(self, generation: int, error: KafkaError) -> None:
        """librdkafka's error callback (called from ``poll`` on the loop thread)."""
        if generation != self._generation:
            return
        now = self._clock()
        if error.fatal():
            log.error("producer fatal error: %s", error.str())
            self.health.producer_fatal(f"fatal error: {error.str()}", now)
            self._recover_now.set()
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._broker_unreachable(error.str())
        else:
            log.debug("producer error: %s", error.str())

    def _broker_unreachable(self, reason: str) -> None:
        if self.health.broker_down is None:
            log.warning("broker down: %s", reason)
        self.health.broker_unreachable(reason, self._clock())

    # -- recovery -------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Connect, probe, create lost topics, rebuild a producer that stopped delivering."""
        while not self._closing:
            try:
                await self._recover_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the task every recovery depends on must not die
                log.exception("recovery round failed; retrying")
            self._recover_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recover_now.wait(), PROBE_INTERVAL_S)

    async def _recover_once(self) -> None:
        health = self.health
        if self._producer is None:
            await self._connect()
            return
        last_ack = health.last_ack_at
        if (
            health.failing is not None
            or health.broker_down is not None
            or last_ack is None
            or self._clock() - last_ack >= PROBE_INTERVAL_S
        ):
            await self._probe()
        if health.broker_down is not None:
            return
        await self._resolve_topics()
        reason = health.rebuild_due(self._clock())
        if reason is not None:
            self._rebuild(reason)

    async def _connect(self) -> None:
        try:
            await asyncio.to_thread(self._cluster.connect, PROBE_TIMEOUT_S)
        except ClusterError as exc:
            if not self._unreachable_logged:
                log.warning("broker not reachable, retrying every %gs: %s", PROBE_INTERVAL_S, exc)
                self._unreachable_logged = True
            self.health.broker_unreachable(str(exc), self._clock())
            return
        log.info("broker reachable: connected")
        self._generation += 1
        self._producer = self._cluster.producer(partial(self._on_producer_error, self._generation))
        self.health.probe_answered(self._clock())
        await self._resolve_topics()

    async def _probe(self) -> None:
        try:
            existing = await asyncio.to_thread(self._cluster.topics, PROBE_TIMEOUT_S)
        except ClusterError as exc:
            self._broker_unreachable(f"metadata probe failed: {exc}")
            return
        if self.health.broker_down is not None:
            log.info("broker reachable again")
        self.health.probe_answered(
            self._clock(), frozenset(existing), frozenset(self._names.values())
        )

    async def _resolve_topics(self) -> None:
        """Create or look up topics not resolved yet, and those the broker lost."""
        missing = self.health.topics_missing
        todo = {t for t in self._wanted if t not in self._names or self._names[t] in missing}
        if not todo:
            return
        try:
            resolved = await asyncio.to_thread(self._cluster.resolve, sorted(todo))
        except ClusterError as exc:
            log.warning("topics not ready: %s", exc)
            return
        lost = {real for name, real in resolved.items() if name in self._names}
        self._names.update(resolved)
        if lost:
            log.warning("topics missing on the broker created again: %s", ", ".join(sorted(lost)))
            self.health.topics_created(lost)
        else:
            log.info("topics ready: %s", ", ".join(sorted(resolved.values())))

    def _rebuild(self, reason: str) -> None:
        """Retire the producer and start a fresh one: a producer that stopped delivering (fenced,
        fatal, or failing while the broker answers) does not recover by itself."""
        old = self._producer
        assert old is not None
        self._generation += 1
        self._producer = self._cluster.producer(partial(self._on_producer_error, self._generation))
        deadline = self._clock() + self._ack_timeout_s + RETIRE_MARGIN_S
        self._retired.append(_Retired(old, deadline))
        self.health.rebuilt(self._clock())
        self._metrics.producer_rebuilt()
        log.warning("producer rebuilt: %s", reason)
        self._wake.set()

    def _poll_retired(self) -> None:
        """Collect retired producers' reports; drop a producer once it holds nothing (or its
        time is up: what it still holds is purged, and those requests fail now)."""
        now = self._clock()
        for retired in self._retired:
            retired.producer.poll(0)
            if len(retired.producer) and now >= retired.deadline:
                retired.producer.purge()
                retired.producer.poll(0)
        del retired  # the loop variable must not keep a producer alive on the loop thread
        done = [r.producer for r in self._retired if not len(r.producer)]
        if done:
            self._retired = [r for r in self._retired if len(r.producer)]
            # Destroying a librdkafka client can block on its threads: not on the loop. The
            # list holds the last references; clearing it in the thread destroys them there.
            asyncio.get_running_loop().run_in_executor(None, done.clear)

    # -- shutdown -------------------------------------------------------------------------

    async def close(self, timeout_s: float) -> int:
        """Stop taking records, deliver what is queued within ``timeout_s``; return how many
        records were left undelivered (their requests got 503)."""
        self._closing = True
        self._wake.set()
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future, _ in self._queue:
            self._fail(future, "shutting down")
        self._queue.clear()
        left = self._in_flight
        if left:
            # Void what the broker did not ack in time: the delivery reports fire now, on this
            # thread, and fail their requests with 503.
            for producer in (self._producer, *(r.producer for r in self._retired)):
                if producer is not None:
                    producer.purge()
                    producer.poll(0)
        return left
