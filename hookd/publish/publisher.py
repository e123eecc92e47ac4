"""The batching publisher: hands records to the Kafka producer on the loop thread.

Request handlers call ``publish`` and await the returned future. A single task produces what
has queued since it last ran (one wake-up per batch, not per request) and polls the producer
for delivery reports while anything is in flight; each report resolves its request's future.
The loop never blocks on the producer: ``produce`` never retries a full queue, ``poll`` is
always called with a zero timeout, and the metadata probe runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message
from quixstreams.kafka import ConnectionConfig, Producer
from quixstreams.models.topics.admin import TopicAdmin

from hookd.metrics import Metrics
from hookd.record import Record

log = logging.getLogger("hookd.publish")

#: How often delivery reports are collected while records are in flight.
POLL_INTERVAL_S = 0.001
#: Without an ack for this long, ask the broker for metadata to learn whether it is up.
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
#: ``/readyz`` is 200 only if the broker answered within this window.
READY_WINDOW_S = 10.0


class PublishError(Exception):
    """The record is not durable. The request is answered 503 with ``Retry-After``."""


class Publisher:
    """Produces records in batches and resolves a future per record from its delivery report."""

    def __init__(
        self,
        connection: str | ConnectionConfig,
        producer_config: dict[str, str | int | float | bool],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = Producer(
            broker_address=connection,
            extra_config=producer_config,
            error_callback=self.on_producer_error,
        )
        # The probe connects like the producer (SASL, TLS and the rest of [kafka.extra]).
        self._admin = TopicAdmin(broker_address=connection, extra_config=producer_config)
        self._metrics = metrics
        self._clock = clock
        self._queue: deque[tuple[Record, asyncio.Future[None], float]] = deque()
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self.broker_down_since: float | None = None
        self.last_ack_at: float | None = None

    # -- request side ---------------------------------------------------------------------

    def publish(self, record: Record) -> asyncio.Future[None]:
        """Queue a record; the future resolves when Kafka acknowledged it, or fails with
        ``PublishError``. Fails at once when the broker is known to be down or we are closing."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_exception(PublishError("shutting down"))
        elif self.broker_down_since is not None:
            future.set_exception(PublishError("broker unavailable"))
        else:
            self._queue.append((record, future, self._clock()))
            self._wake.set()
        return future

    # -- the task -------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="hookd-publisher")
        self._probe = loop.create_task(self._watch_broker(), name="hookd-broker-probe")

    async def _run(self) -> None:
        while True:
            if not self._queue and not self._in_flight:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            self._produce_queued()
            self._producer.poll(0)
            if self._in_flight:
                await asyncio.sleep(POLL_INTERVAL_S)

    def _produce_queued(self) -> None:
        queue = self._queue
        while queue:
            record, future, queued_at = queue.popleft()
            if future.done():  # the client went away before we got to it
                continue
            try:
                self._producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    headers=list(record.headers),
                    timestamp=record.timestamp_ms,
                    buffer_error_max_tries=0,
                    on_delivery=partial(self._delivered, future, queued_at),
                )
            except BufferError:
                self._fail(future, "local producer queue full")
                continue
            except KafkaException as exc:
                self._fail(future, exc.args[0].str() if exc.args else "produce failed")
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
        error: KafkaError | None,
        message: Message,
    ) -> None:
        self._in_flight -= 1
        if error is not None:
            if error.code() == KafkaError._MSG_TIMED_OUT:  # a stalled broker looks like this
                self._mark_down(f"delivery timed out: {error.str()}")
            self._fail(future, error.str())
            return
        now = self._clock()
        self.last_ack_at = now
        self._metrics.observe_publish(now - queued_at)
        if not future.done():
            future.set_result(None)

    def _fail(self, future: asyncio.Future[None], reason: str) -> None:
        self._metrics.delivery_failed(reason)
        if not future.done():
            future.set_exception(PublishError(reason))

    # -- broker health --------------------------------------------------------------------

    def on_producer_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (called from ``poll`` on the loop thread)."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._mark_down(error.str())
        else:
            log.warning("producer error: %s", error.str())

    def _mark_down(self, reason: str) -> None:
        """Fail new records at once until the metadata probe reaches the broker again."""
        if self.broker_down_since is None:
            log.warning("broker down: %s", reason)
            self.broker_down_since = self._clock()

    @property
    def ready(self) -> bool:
        """The broker answered recently (an ack or a metadata probe) and is not known down."""
        return (
            self.broker_down_since is None
            and self.last_ack_at is not None
            and self._clock() - self.last_ack_at < READY_WINDOW_S
        )

    async def _watch_broker(self) -> None:
        """Probe the broker's metadata whenever no ack arrived lately; it is how a broker
        marked down is seen up again, and how an idle hookd stays ready."""
        while not self._closing:
            last = self.last_ack_at
            if last is None or self._clock() - last >= PROBE_INTERVAL_S:
                try:
                    await asyncio.to_thread(self._admin.list_topics, PROBE_TIMEOUT_S)
                except KafkaException as exc:
                    self._mark_down(f"metadata probe failed: {exc}")
                else:
                    if self.broker_down_since is not None:
                        log.info("broker reachable again")
                    self.broker_down_since = None
                    self.last_ack_at = self._clock()
            await asyncio.sleep(PROBE_INTERVAL_S)

    # -- shutdown -------------------------------------------------------------------------

    async def close(self, timeout_s: float) -> int:
        """Stop taking records, deliver what is queued within ``timeout_s``; return how many
        records were left undelivered (their requests got 503)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._probe is not None:
            self._probe.cancel()
        for _, future, _ in self._queue:
            self._fail(future, "shutting down")
        self._queue.clear()
        left = self._in_flight
        if left:
            # Void what the broker did not ack in time: the delivery reports fire now, on this
            # thread, and fail their requests with 503.
            self._producer.purge()
            self._producer.poll(0)
        return left
