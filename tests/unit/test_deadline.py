"""Answering inside the provider's timeout: the outbox stops waiting for Kafka before a
request's deadline (spool fallback or 503), never appends one request twice, and cancels its
timer when Kafka answers first; the protocol hands the outbox the deadline and measures each
answer against it. Publisher and cluster are the fakes of ``fake_kafka``; the spool is a
stand-in whose append can be held, like a slow fsync."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import pytest
from fake_kafka import FakeCluster
from fakes import connect, server_context, until

from hookd.config import validate
from hookd.metrics import Metrics
from hookd.publish.ack import AckMode
from hookd.publish.deadline import (
    DEADLINE_REASON,
    REFUSAL_LEAD_S,
    SPOOL_FALLBACK_LEAD_S,
    stop_waiting_after,
)
from hookd.publish.outbox import Outbox
from hookd.publish.publisher import Publisher, PublishError
from hookd.publish.spool import Spool
from hookd.record import Record
from hookd.routing import build_routes
from hookd.verify import SCHEMES


class StandInSpool:
    """Only what a commit uses: ``append``. ``hold()`` makes appends wait for ``release()``."""

    def __init__(self) -> None:
        self.appended: list[Record] = []
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def append(self, record: Record) -> asyncio.Future[None]:
        return asyncio.ensure_future(self._append(record))

    async def _append(self, record: Record) -> None:
        await self._open.wait()
        self.appended.append(record)


class Timers:
    """Wraps the running loop's ``call_later`` to keep every handle it returns."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
        self.handles: list[asyncio.TimerHandle] = []
        self.loop = loop
        real = loop.call_later

        def call_later(delay: float, callback: Callable[..., object], *args: Any) -> Any:
            handle = real(delay, callback, *args)
            self.handles.append(handle)
            return handle

        monkeypatch.setattr(loop, "call_later", call_later)

    def far(self) -> list[asyncio.TimerHandle]:
        """Handles due more than 20 s from now (the tests give 30 s deadlines)."""
        return [h for h in self.handles if h.when() > self.loop.time() + 20]


def record(value: bytes) -> Record:
    return Record("t", b"key", value, (("hookd-route", b"/r"),), 1)


def make(cluster: FakeCluster, spool: StandInSpool | None = None) -> Outbox:
    metrics = Metrics()
    publisher = Publisher(
        cluster, metrics, ack_timeout_s=5, topics={"t"}, topic_names={"t": "t"}, connected=True
    )
    return Outbox(publisher, cast(Spool | None, spool), metrics)


def started(cluster: FakeCluster, spool: StandInSpool | None = None) -> Outbox:
    """``make``, with its publisher started."""
    outbox = make(cluster, spool)
    outbox.publisher.start()
    return outbox


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> list[dict[str, Any]]:
    """Run ``body``; return what the loop's exception handler saw (a leaked failure, say)."""
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        await body()
        gc.collect()  # a failed future nobody retrieved reports itself when collected
        await asyncio.sleep(0)

    asyncio.run(main())
    return errors


# -- the defaults ---------------------------------------------------------------------------


def test_the_providers_table_states_each_schemes_default():
    """docs/providers.md's table says what the catalogue does, for every scheme."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "providers.md").read_text()
    section = text.split("## Answering in time", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, float | None] = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        cells = row.split(" | ")
        default = cells[-1].rstrip(" |")
        seconds = None if default.startswith("`ack_timeout_s`") else float(default.split()[0])
        for scheme in re.findall(r"`([a-z-]+)`", cells[0]):
            documented[scheme] = seconds
    assert documented == {name: scheme.default_respond_within_s for name, scheme in SCHEMES.items()}


# -- when to stop waiting ---------------------------------------------------------------------


def test_the_lead_leaves_room_for_the_answer_but_never_more_than_half_the_time_left():
    assert stop_waiting_after(2.5, can_spool=True) == pytest.approx(2.5 - SPOOL_FALLBACK_LEAD_S)
    assert stop_waiting_after(2.5, can_spool=False) == pytest.approx(2.5 - REFUSAL_LEAD_S)
    assert stop_waiting_after(0.6, can_spool=True) == pytest.approx(0.3)  # half, not 0.1
    assert stop_waiting_after(0.0, can_spool=True) is None  # already late: nothing to protect
    assert stop_waiting_after(-1.0, can_spool=False) is None


# -- the outbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize("then", ["acked", "failed"])
def test_kafka_or_spool_is_spooled_before_the_deadline_and_only_once(then):
    """The broker holds the record past the deadline: the spool takes it and the request is
    durable in time. Whatever the produce does later (lands: a duplicate in Kafka; fails:
    nothing), the record is not appended again."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        cluster, spool = FakeCluster({"t"}), StandInSpool()
        cluster.stalled = True  # never acks while stalled
        outbox = started(cluster, spool)
        answer_by = loop.time() + 1.0
        durable = outbox.commit(record(b"late"), AckMode.KAFKA_OR_SPOOL, answer_by)
        await asyncio.wait_for(durable, 2)
        answered_at = loop.time()
        assert answered_at < answer_by, answered_at - answer_by
        assert answered_at >= answer_by - SPOOL_FALLBACK_LEAD_S - 0.05  # Kafka had its chance
        assert [r.value for r in spool.appended] == [b"late"]
        assert outbox._metrics.spooled["fallback"] == 1
        # The broker comes back, or gives up on the record: the request's fate stays decided.
        cluster.up = then == "acked"
        cluster.stalled = False
        if then == "acked":
            await until(lambda: cluster.delivered)
            assert cluster.delivered == [("t", b"late")]  # the duplicate at-least-once allows
        else:
            await until(lambda: outbox._metrics.delivery_failures)
        await asyncio.sleep(0.02)
        assert [r.value for r in spool.appended] == [b"late"]
        assert outbox._metrics.spooled["fallback"] == 1
        assert durable.result() is None
        await outbox.publisher.close(0.1)

    assert run(body) == []


def test_a_publish_that_fails_while_the_deadline_append_runs_does_not_append_again():
    """The deadline starts the append; before its fsync is done, the produce fails (which on
    its own would also fall back on the spool). One append, one answer."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        cluster, spool = FakeCluster({"t"}), StandInSpool()
        cluster.stalled = True
        outbox = started(cluster, spool)
        spool.hold()  # the fsync takes its time
        durable = outbox.commit(record(b"x"), AckMode.KAFKA_OR_SPOOL, loop.time() + 0.4)
        await until(lambda: outbox._fallbacks)  # the deadline's append is under way
        cluster.up, cluster.stalled = False, False  # now the produce fails (timed out)
        await until(lambda: outbox._metrics.delivery_failures)
        await asyncio.sleep(0.02)
        assert not durable.done() and len(outbox._fallbacks) == 1
        spool.release()
        await asyncio.wait_for(durable, 1)
        assert [r.value for r in spool.appended] == [b"x"]
        assert outbox._metrics.spooled["fallback"] == 1
        await outbox.publisher.close(0.1)

    assert run(body) == []


def test_kafka_without_spool_fails_before_the_deadline_with_the_reason():
    async def body() -> None:
        loop = asyncio.get_running_loop()
        cluster = FakeCluster({"t"})
        cluster.stalled = True
        outbox = started(cluster)
        answer_by = loop.time() + 0.5
        durable = outbox.commit(record(b"refused"), AckMode.KAFKA, answer_by)
        with pytest.raises(PublishError, match=DEADLINE_REASON):
            await asyncio.wait_for(durable, 2)
        assert answer_by - REFUSAL_LEAD_S - 0.05 <= loop.time() < answer_by
        cluster.stalled = False  # the produce still lands: the sender's retry is a duplicate
        await until(lambda: cluster.delivered)
        await outbox.publisher.close(0.1)

    assert run(body) == []


@pytest.mark.parametrize("mode", [AckMode.KAFKA, AckMode.KAFKA_OR_SPOOL])
def test_the_timer_is_cancelled_when_kafka_acks_first(mode, monkeypatch):
    async def body() -> None:
        loop = asyncio.get_running_loop()
        timers = Timers(loop, monkeypatch)
        cluster, spool = FakeCluster({"t"}), StandInSpool()
        outbox = started(cluster, spool)
        durable = outbox.commit(record(b"fast"), mode, loop.time() + 30)
        await asyncio.wait_for(durable, 2)
        deadline_timers = timers.far()
        assert len(deadline_timers) == 1 and deadline_timers[0].cancelled()
        assert spool.appended == [] and cluster.delivered == [("t", b"fast")]
        await outbox.publisher.close(0.1)

    assert run(body) == []


def test_no_timer_without_something_to_wait_for(monkeypatch):
    """``ack = "spool"`` answers with the fsync; a record refused at once needs no timer; a
    deadline already past leaves Kafka its full ack timeout."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        timers = Timers(loop, monkeypatch)
        cluster, spool = FakeCluster({"t"}), StandInSpool()
        outbox = started(cluster, spool)
        await outbox.commit(record(b"spooled"), AckMode.SPOOL, loop.time() + 30)
        await outbox.commit(record(b"past"), AckMode.KAFKA, loop.time() - 1)
        cluster.up = False
        outbox.publisher.health.broker_unreachable("down", loop.time())
        with pytest.raises(PublishError, match="broker unavailable"):
            await outbox.commit(record(b"refused"), AckMode.KAFKA, loop.time() + 30)
        await outbox.commit(record(b"fell back"), AckMode.KAFKA_OR_SPOOL, loop.time() + 30)
        assert timers.far() == []
        assert [r.value for r in spool.appended] == [b"spooled", b"fell back"]
        await outbox.publisher.close(0.1)

    assert run(body) == []


# -- the protocol -------------------------------------------------------------------------------


class RecordingOutbox:
    """Holds every commit and keeps the deadline it was given."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.commits: list[tuple[AckMode, float | None, asyncio.Future[None]]] = []

    def commit(
        self, record: Record, mode: AckMode, answer_by: float | None = None
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self.commits.append((mode, answer_by, future))
        return future


def test_the_protocol_gives_the_deadline_from_the_head_and_measures_the_answer(manual_loop):
    config = validate(
        {
            "routes": [
                {"path": "/slack", "topic": "t", "verify": "token", "secrets": ["s"]},
                {
                    "path": "/fast",
                    "topic": "t",
                    "verify": "token",
                    "secrets": ["s"],
                    "respond_within_s": 2,
                },
            ]
        },
        {},
    )
    routes = build_routes(config)
    assert routes.lookup(b"/slack").respond_within_s == 8  # token: no provider, ack_timeout_s
    outbox = RecordingOutbox(manual_loop)
    ctx = server_context(config, routes, cast(Any, outbox))
    head = b"POST /fast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s\r\nContent-Length: 2\r\n\r\n"

    async def scenario() -> None:
        protocol, transport = connect(ctx, manual_loop)
        manual_loop.now = 100.0
        protocol.data_received(head)  # the deadline starts here, not when the body is in
        manual_loop.now = 100.5
        protocol.data_received(b"{}")
        [(mode, answer_by, future)] = outbox.commits
        assert mode is AckMode.KAFKA and answer_by == pytest.approx(102.0)
        manual_loop.now = 101.5
        future.set_result(None)
        await asyncio.sleep(0)
        assert transport.written.startswith(b"HTTP/1.1 200 ")
        used = ctx.metrics.deadline_used_by_route["/fast"]
        assert used.count == 1 and used.sum == pytest.approx(0.75)  # 1.5 s of 2 s
        text = ctx.metrics.render().decode()
        assert 'hookd_answer_deadline_used_ratio_bucket{route="/fast",le="0.5"} 0' in text
        assert 'hookd_answer_deadline_used_ratio_bucket{route="/fast",le="0.75"} 1' in text
        assert 'hookd_answer_deadline_used_ratio_count{route="/fast"} 1' in text
        protocol.connection_lost(None)

    manual_loop.run_until_complete(scenario())
