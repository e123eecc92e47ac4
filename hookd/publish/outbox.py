"""Where a verified record goes before its 2xx, by the route's ack mode; and the forwarder
that drains the spool to Kafka.

* ``KAFKA``: the broker's ack, or 503.
* ``KAFKA_OR_SPOOL``: the broker's ack; if Kafka cannot ack (down, slow past the ack timeout,
  local queue full), the spool's fsync instead.
* ``SPOOL``: the spool's fsync; the forwarder publishes it in the background.

Records that reach Kafka through the spool keep their original timestamp, key and headers.
The forwarder deletes a spooled record only after the broker acked it, so a crash at any point
repeats records rather than losing them (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from hookd.publish.publisher import Publisher, PublishError
from hookd.publish.spool import Spool, SpoolError, SpoolFull
from hookd.record import Record
from hookd.routing import AckMode

log = logging.getLogger("hookd.spool")

#: Records read from the spool per forwarding round.
FORWARD_BATCH = 500
#: Pause after a round in which some records were not acked, or while the broker is down.
FORWARD_RETRY_S = 1.0


class Outbox:
    """Commits records durably per ack mode; owns the spool forwarder task."""

    def __init__(self, publisher: Publisher, spool: Spool | None) -> None:
        self.publisher = publisher
        self.spool = spool
        self._spooled = asyncio.Event()
        self._forwarder: asyncio.Task[None] | None = None
        self._fallbacks: set[asyncio.Task[None]] = set()
        self._closing = False

    def commit(self, record: Record, mode: AckMode) -> asyncio.Future[None]:
        """A future that resolves once the record is durable, or fails with ``PublishError``."""
        if mode is AckMode.KAFKA:
            return self.publisher.publish(record)
        if mode is AckMode.SPOOL:
            return asyncio.ensure_future(self._append(record))
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.publisher.publish(record).add_done_callback(partial(self._fall_back, record, durable))
        return durable

    def _fall_back(
        self, record: Record, durable: asyncio.Future[None], published: asyncio.Future[None]
    ) -> None:
        if published.exception() is None:
            durable.set_result(None)
            return
        task = asyncio.ensure_future(self._append(record))
        self._fallbacks.add(task)
        task.add_done_callback(partial(self._settle, durable))

    def _settle(self, durable: asyncio.Future[None], appended: asyncio.Task[None]) -> None:
        self._fallbacks.discard(appended)
        if durable.done():
            return
        error = appended.exception()
        if error is None:
            durable.set_result(None)
        else:
            durable.set_exception(error)

    async def _append(self, record: Record) -> None:
        assert self.spool is not None, "config validation requires [spool] for spool modes"
        try:
            await self.spool.append(record)
        except SpoolFull:
            raise PublishError("spool full") from None
        except SpoolError as exc:
            log.error("spool append failed: %s", exc)  # the detail stays in the log
            raise PublishError("spool unavailable") from None
        self._spooled.set()

    # -- the forwarder --------------------------------------------------------------------

    def start(self) -> None:
        if self.spool is not None:
            self._forwarder = asyncio.get_running_loop().create_task(
                self._forward(), name="hookd-spool-forwarder"
            )

    async def _forward(self) -> None:
        """Drain the spool oldest first; delete only what the broker acked."""
        spool = self.spool
        assert spool is not None
        if spool.depth:
            log.info("spool holds %d records from before; forwarding them", spool.depth)
        while not self._closing:
            try:
                await self._forward_once(spool)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The spool keeps every record; a failed round is retried, never fatal.
                log.exception("spool forwarding failed; retrying")
                await asyncio.sleep(FORWARD_RETRY_S)

    async def _forward_once(self, spool: Spool) -> None:
        """One round: wait for work, or publish a batch and delete what was acked."""
        if not spool.depth:
            self._spooled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spooled.wait(), FORWARD_RETRY_S)
            return
        if self.publisher.broker_down_since is not None:
            await asyncio.sleep(FORWARD_RETRY_S)
            return
        batch = await spool.oldest(FORWARD_BATCH)
        outcomes = await asyncio.gather(
            *(self.publisher.publish(record) for _, record in batch), return_exceptions=True
        )
        acked = [row for (row, _), outcome in zip(batch, outcomes, strict=True) if outcome is None]
        if acked:
            await spool.delete(acked)
        if len(acked) < len(batch):
            await asyncio.sleep(FORWARD_RETRY_S)

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
            and self.publisher.broker_down_since is None
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
