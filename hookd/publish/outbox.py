"""Durability: where a verified record goes before its 2xx, by the route's ack mode; the
forwarder that drains the spool to Kafka; and whether this process can keep its promise now.

* ``KAFKA``: the broker's ack, or 503 -- also when no ack came by the route's
  ``respond_within_s`` (:mod:`hookd.publish.deadline`).
* ``KAFKA_OR_SPOOL``: the broker's ack; if Kafka cannot ack (down, not by the route's
  ``respond_within_s``, local queue full, producer being replaced), the spool's fsync instead.
* ``SPOOL``: the spool's fsync; the forwarder publishes it in the background.

A record the broker refuses for good (too large, not authorized, invalid topic) is never put in
the spool as a fallback: the spool could not forward it either, so the request gets 503.

Records that reach Kafka through the spool keep their original timestamp, key and headers.
The forwarder deletes a spooled record only after the broker acked it, so a crash at any point
repeats records rather than losing them (at-least-once); so does a produce that Kafka acks
after its request was spooled at the deadline. The forwarder also adopts the spools of worker
indexes that no longer run (the worker count shrank) and removes them once forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from hookd.metrics import Metrics
from hookd.publish.ack import AckMode
from hookd.publish.deadline import DEADLINE_REASON, stop_waiting_after
from hookd.publish.health import Failure
from hookd.publish.publisher import Publisher, PublishError
from hookd.publish.segments import spool_indexes
from hookd.publish.spool import Spool, SpoolError, SpoolFull, SpoolLocked
from hookd.record import Record

log = logging.getLogger("hookd.spool")

#: Records read from the spool per forwarding round.
FORWARD_BATCH = 500
#: Pause after a round in which some records were not acked, or while the broker is down.
FORWARD_RETRY_S = 1.0
#: How often the forwarder looks for spool files no running worker index owns.
ADOPT_INTERVAL_S = 5.0
#: A spool that holds records and forwarded none for this long is not draining.
PROGRESS_WINDOW_S = 10.0
#: Deliveries failing this long while the broker answers: this process is wedged, and a
#: supervisor (or an orchestrator's liveness probe) should restart it.
WEDGED_AFTER_S = 120.0


class Outbox:
    """Commits records durably per ack mode; runs the publisher and the spool forwarder, and
    answers whether the promise can be kept (readiness) and whether the process is wedged."""

    def __init__(
        self,
        publisher: Publisher,
        spool: Spool | None,
        metrics: Metrics,
        *,
        worker_count: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``worker_count``: spool files with an index at or above it have no worker and are
        adopted by this one's forwarder."""
        self.publisher = publisher
        self.spool = spool
        self._metrics = metrics
        self._worker_count = worker_count
        self._clock = clock
        self._spooled = asyncio.Event()
        self._forwarder: asyncio.Task[None] | None = None
        self._fallbacks: set[asyncio.Future[None]] = set()
        self._spooling: set[asyncio.Future[None]] = set()  # requests whose fallback append runs
        self._closing = False
        self._progress_at = clock()  # the spool last was empty or had records forwarded
        self._next_adoption = 0.0
        self._refused_orphans: set[int] = set()

    # -- commit ---------------------------------------------------------------------------

    def commit(
        self, record: Record, mode: AckMode, answer_by: float | None = None
    ) -> asyncio.Future[None]:
        """A future that resolves once the record is durable, or fails with ``PublishError``.

        ``answer_by``: the loop time by which the request must be answered (its route's
        ``respond_within_s`` after its head arrived). If Kafka has not acked shortly before it,
        a ``KAFKA_OR_SPOOL`` record goes to the spool and a ``KAFKA`` one fails (503), in time
        (``hookd.publish.deadline``). The produce goes on: if it lands later, the record is in
        Kafka twice, which at-least-once allows. ``SPOOL`` ignores it: the fsync is the answer.
        """
        if mode is AckMode.SPOOL:
            spooled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._append(record, "ack", spooled)
            return spooled
        published = self.publisher.publish(record)
        if mode is AckMode.KAFKA and (answer_by is None or published.done()):
            return published  # no deadline to keep, or refused at once
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()
        timer = None
        if answer_by is not None and not published.done():
            can_spool = mode is AckMode.KAFKA_OR_SPOOL
            delay = stop_waiting_after(answer_by - loop.time(), can_spool=can_spool)
            if delay is not None:
                timer = loop.call_later(delay, self._deadline_near, record, mode, durable)
        published.add_done_callback(partial(self._fall_back, record, mode, durable, timer))
        return durable

    def _deadline_near(self, record: Record, mode: AckMode, durable: asyncio.Future[None]) -> None:
        """Kafka has not acked and the request's deadline is near: spool it, or refuse it."""
        if durable.done() or durable in self._spooling:
            return
        if mode is AckMode.KAFKA_OR_SPOOL:
            self._spool_instead(record, durable)
        else:
            durable.set_exception(PublishError(DEADLINE_REASON))

    def _fall_back(
        self,
        record: Record,
        mode: AckMode,
        durable: asyncio.Future[None],
        timer: asyncio.TimerHandle | None,
        published: asyncio.Future[None],
    ) -> None:
        """Kafka answered: the request is durable, refused, or falls back on the spool. When
        the deadline came first, the answer is already decided and a late ack is a duplicate."""
        if timer is not None:
            timer.cancel()
        error = published.exception()  # retrieved even when unused: asyncio would log it
        if durable.done() or durable in self._spooling:
            return
        if error is None:
            durable.set_result(None)
            return
        if mode is AckMode.KAFKA or (
            isinstance(error, PublishError) and error.failure is Failure.RECORD
        ):
            durable.set_exception(error)  # 503; a record refused for good could not be forwarded
            return
        self._spool_instead(record, durable)

    def _spool_instead(self, record: Record, durable: asyncio.Future[None]) -> None:
        """Append a record Kafka did not take to the spool; ``durable`` settles with the append.
        ``_spooling`` marks the request, so that it is never appended twice (deadline, then a
        failed publish)."""
        self._spooling.add(durable)
        self._fallbacks.add(self._append(record, "fallback", durable))

    def _append(
        self, record: Record, reason: str, durable: asyncio.Future[None]
    ) -> asyncio.Future[None]:
        """Append the record to the spool; ``durable`` settles with the append, failing with
        :class:`PublishError` (the answer's reason) where the spool's own error says why.
        Returns the spool's future, which ``close`` waits for."""
        assert self.spool is not None, "config validation requires [spool] for spool modes"
        appended = self.spool.append(record)
        appended.add_done_callback(partial(self._appended, reason, durable))
        return appended

    def _appended(
        self, reason: str, durable: asyncio.Future[None], appended: asyncio.Future[None]
    ) -> None:
        self._fallbacks.discard(appended)
        self._spooling.discard(durable)
        if appended.cancelled():
            durable.cancel()
            return
        error = appended.exception()
        if error is None:
            self._metrics.spool_appended(reason)
            self._spooled.set()
        if durable.done():
            return
        if error is None:
            durable.set_result(None)
        else:
            durable.set_exception(_append_failure(error))

    # -- health ---------------------------------------------------------------------------

    def not_ready(self) -> str | None:
        """Why this process cannot keep its promise now, or ``None``.

        Deliveries failing make it unready, unless the spool, with room, takes the records and
        either the broker is unreachable (an outage the spool is for: taking every replica out
        of rotation would lose webhooks from senders that do not retry) or the forwarder is
        making progress. A broker that answers while deliveries keep failing is not an outage
        the spool can bridge: the spool would only grow.
        """
        health, now = self.publisher.health, self._clock()
        problem = health.failing_reason()
        if problem is None:
            return None if health.answering(now) else "broker has not answered lately"
        spool = self.spool
        if spool is None:
            return problem
        if spool.size_bytes >= spool.max_bytes:
            return f"{problem}; spool full"
        if health.broker_down is not None:
            return None
        if not spool.depth or now - self._progress_at < PROGRESS_WINDOW_S:
            return None
        return f"{problem}; spool not draining"

    def wedged(self) -> str | None:
        """Why this process should be restarted, or ``None``: deliveries have failed for
        ``WEDGED_AFTER_S`` while the broker answers, and rebuilding the producer did not help."""
        health = self.publisher.health
        if health.broker_down is not None:
            return None  # a restart cannot bring the broker back
        failing_for = health.failing_for(self._clock())
        if failing_for < WEDGED_AFTER_S:
            return None
        return f"deliveries failing for {failing_for:.0f}s: {health.failing_reason()}"

    # -- the forwarder --------------------------------------------------------------------

    def start(self) -> None:
        """Start the publisher, and the spool forwarder when there is a spool."""
        self.publisher.start()
        if self.spool is not None:
            self._forwarder = asyncio.get_running_loop().create_task(
                self._forward(self.spool), name="hookd-spool-forwarder"
            )

    async def _forward(self, spool: Spool) -> None:
        """Drain the spool oldest first; delete only what the broker acked."""
        if spool.depth:
            log.info("spool holds %d records from before; forwarding them", spool.depth)
        while not self._closing:
            try:
                await self._forward_once(spool)
                await self._adopt_orphans(spool.directory)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The spool keeps every record; a failed round is retried, never fatal.
                log.exception("spool forwarding failed; retrying")
                await asyncio.sleep(FORWARD_RETRY_S)

    async def _forward_once(self, spool: Spool) -> None:
        """One round: wait for work, or publish a batch and delete what was acked."""
        if not spool.depth:
            self._progress_at = self._clock()
            self._spooled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spooled.wait(), FORWARD_RETRY_S)
            return
        if not await self._forward_batch(spool):
            await asyncio.sleep(FORWARD_RETRY_S)

    async def _forward_batch(self, spool: Spool) -> bool:
        """Publish the oldest records; delete the acked, set aside the refused for good.
        Returns whether every record of the batch was settled."""
        if self.publisher.refusal_for_all() is not None:
            return False
        batch = await spool.oldest(FORWARD_BATCH)
        outcomes = await asyncio.gather(
            *(self.publisher.publish(record) for _, record in batch), return_exceptions=True
        )
        acked: list[int] = []
        poison: dict[str, list[int]] = {}
        for (row, record), outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                acked.append(row)
            elif isinstance(outcome, PublishError) and outcome.failure is Failure.RECORD:
                reason = str(outcome)
                poison.setdefault(reason, []).append(row)
                log.error(
                    "spooled record %d (route %s, topic %s) refused by the broker for good, "
                    "set aside as a dead letter: %s",
                    row,
                    _route_of(record),
                    record.topic,
                    reason,
                )
        if acked:
            await spool.delete(acked)
            self._progress_at = self._clock()
        for reason, rows in poison.items():
            await spool.set_aside(rows, reason)
            self._progress_at = self._clock()
        return len(acked) + sum(map(len, poison.values())) == len(batch)

    async def _adopt_orphans(self, directory: Path) -> None:
        """Forward and remove the spool files of worker indexes that no longer run."""
        now = self._clock()
        if now < self._next_adoption or self.publisher.refusal_for_all() is not None:
            return
        self._next_adoption = now + ADOPT_INTERVAL_S
        own = self.spool
        assert own is not None
        for index in spool_indexes(directory):
            if index < self._worker_count or self._closing:
                continue
            try:
                orphan = await Spool.open(directory, own.max_bytes, index)
            except SpoolLocked:
                continue  # another worker is adopting it
            except SpoolError as exc:
                if index not in self._refused_orphans:  # say it once, not every round
                    self._refused_orphans.add(index)
                    log.error("not adopting the spool of worker index %d: %s", index, exc)
                continue
            try:
                if orphan.depth:
                    log.warning(
                        "adopting %s: %d records left by a worker index that no longer runs",
                        orphan.path,
                        orphan.depth,
                    )
                while orphan.depth and not self._closing:
                    if not await self._forward_batch(orphan):
                        break  # the broker is in trouble: try again next round
            finally:
                await orphan.close(remove_if_empty=True)
            if not orphan.depth:
                log.info("adopted %s forwarded; removed", orphan.path)

    async def close(self, timeout_s: float) -> int:
        """Within ``timeout_s``: forward what the spool holds while the broker is up, let the
        publisher deliver what it can, put requests that fall back on the spool into it, and
        close the spool (what is left waits there for the next start). Returns how many
        records Kafka left unacked."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        spool = self.spool
        while (
            spool is not None
            and spool.depth
            and self.publisher.refusal_for_all() is None
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.05)
        self._closing = True
        if self._forwarder is not None:
            self._forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._forwarder
        left = await self.publisher.close(max(deadline - loop.time(), 0.5))
        await asyncio.sleep(0)  # failed publishes schedule their fallback appends
        if self._fallbacks:
            await asyncio.wait(set(self._fallbacks))
        if self.spool is not None:
            await self.spool.close()
            log.info("spool closed with %d records for the next start", self.spool.depth)
        return left


def _route_of(record: Record) -> str:
    for name, value in record.headers:
        if name == "hookd-route":
            return value.decode(errors="replace")
    return "?"


def _append_failure(error: BaseException) -> BaseException:
    """What a failed append answers: a full spool and an unusable one are told apart (the
    detail of the latter stays in the log); anything else is a bug, raised as it is."""
    if isinstance(error, SpoolFull):
        return PublishError("spool full")
    if isinstance(error, SpoolError):
        log.error("spool append failed: %s", error)
        return PublishError("spool unavailable")
    return error
