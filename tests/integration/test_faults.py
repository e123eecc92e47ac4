"""Fault tests against the real broker, each counting what was answered 2xx and what is in
Kafka afterwards: lost must be 0. Each fault is checked to have landed mid-load, and each test
asserts on the answers given *after* it (hookd recovered by itself), not on totals.

Each test runs its own broker (the faults are done to it) and prints its figures
(``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import embedded_broker
import pytest
from embedded_broker import read_topic, wait_for
from http_client import request, segment_request
from support import Launcher, Load, Sampler, TcpProxy, http_get, metric, unique_topic

from hookd.publish.segments import pending_frames
from hookd.publish.spool import Spool
from hookd.record import Record

SECRET = b"fault"
ACK_TIMEOUT_S = 2
#: After a fault ends, how long the load goes on, and the tail of it that must be all 200s.
LOAD_AFTER_S = 14
TAIL_S = 5


def route(topic: str, **extra: object) -> dict[str, object]:
    return {"path": "/in", "topic": topic, "verify": "segment", "secrets": ["fault"], **extra}


@pytest.fixture
def own_broker(tmp_path):
    broker = embedded_broker.start(log=tmp_path / "broker.log")
    yield broker
    broker.stop()


@pytest.fixture
def launcher(own_broker, tmp_path):
    launcher = Launcher(own_broker, tmp_path)
    yield launcher
    launcher.stop_all()


def report(name: str, load: Load, published: set[bytes], since: float = 0.0) -> set[bytes]:
    """Print the figures; return what was answered 2xx (to requests sent after ``since``) and
    is not in Kafka."""
    accepted = {body for sent, _, status, body in load.answers if status == 200 and sent >= since}
    lost = accepted - published
    total = sum(load.statuses.values())
    print(
        f"\n{name}: requests {total}, 2xx {len(load.accepted)}, 503 {load.statuses.get(503, 0)}, "
        f"other {total - len(load.accepted) - load.statuses.get(503, 0)}, counted 2xx "
        f"{len(accepted)}, in Kafka {len(published & accepted)}, lost {len(lost)}"
    )
    return lost


def published(broker_address: str, topic: str, expected: int, timeout: float = 30) -> set[bytes]:
    return {r.value() for r in read_topic(broker_address, topic, expected, timeout=timeout)}


def readyz(port: int) -> int:
    return http_get(port, "/readyz")[0]


def assert_recovered(name: str, load: Load, fault_ended: float) -> None:
    """hookd answers 200 again after the fault, by itself: every request of the load's last
    ``TAIL_S`` seconds got a 200."""
    end = max(sent for sent, *_ in load.answers)
    tail = load.statuses_between(end - TAIL_S, end + 1)
    first = load.first_200_after(fault_ended)
    recovered = "never" if first is None else f"{first - fault_ended:.1f}s"
    print(f"{name}: first 200 after the fault ended: {recovered}; last {TAIL_S}s: {tail}")
    assert tail.get(200, 0) >= 10 and set(tail) == {200}, tail


def spool_depth_sampler(port: int) -> Sampler:
    return Sampler(lambda: metric(port, "hookd_spool_depth"))


def start_pair(launcher: Launcher, tmp_path: Path, tag: str, **kafka: object):
    """Two hookds on the same broker: one without a spool (503 while Kafka cannot ack), one
    whose route falls back on its spool."""
    direct_topic, spooled_topic = unique_topic(f"{tag}-direct"), unique_topic(f"{tag}-spooled")
    settings = {"ack_timeout_s": ACK_TIMEOUT_S, **kafka}
    direct = launcher.start([route(direct_topic)], kafka=settings)
    spooled = launcher.start(
        [route(spooled_topic, fallback="spool")],
        kafka=settings,
        spool={"path": str(tmp_path / f"spool-{tag}")},
    )
    return (direct, direct_topic), (spooled, spooled_topic)


def check_pair(
    name: str,
    broker_address: str,
    pair: tuple,
    loads: tuple[Load, Load],
    ready: Sampler,
    depth: Sampler,
    fault: tuple[float, float],
    counted_since: float = 0.0,
) -> None:
    """The assertions every broker fault shares, for the pair of ``start_pair``. Only 2xx
    answers to requests sent after ``counted_since`` must be in Kafka (a broker restarted
    empty has lost what it acked before)."""
    (direct, direct_topic), (spooled, spooled_topic) = pair
    direct_load, spooled_load = loads
    began, ended = fault
    # The fault landed: the direct route answered 503 and the other one spooled.
    assert direct_load.statuses_between(began, ended).get(503, 0) > 0, direct_load.statuses
    assert metric(spooled.admin_port, 'hookd_spooled_total{reason="fallback"}') > 0
    print(f"{name}: deepest spool {max(depth.between(began, ended + 3), default=0):g} records")
    # Readiness told the truth while the direct route was failing.
    assert 503 in ready.between(began, ended + 3), ready.samples
    assert_recovered(f"{name}, fallback reject", direct_load, ended)
    assert_recovered(f"{name}, fallback spool", spooled_load, ended)
    assert readyz(direct.admin_port) == 200
    assert wait_for(lambda: metric(spooled.admin_port, "hookd_spool_depth") == 0, 30)
    for mode, load, topic in (
        ("fallback reject", direct_load, direct_topic),
        ("fallback spool", spooled_load, spooled_topic),
    ):
        in_kafka = published(broker_address, topic, len(load.accepted))
        assert not report(f"{name}, {mode}", load, in_kafka, counted_since)
    assert set(direct_load.statuses) <= {200, 503}, direct_load.statuses
    assert set(spooled_load.statuses) == {200}, spooled_load.statuses


@pytest.mark.parametrize("factor", [2, 3])
def test_broker_frozen_past_the_ack_timeout_recovers(own_broker, launcher, tmp_path, factor):
    pair = start_pair(launcher, tmp_path, f"frozen{factor}")
    (direct, _), (spooled, _) = pair
    freeze_s = factor * ACK_TIMEOUT_S
    with (
        Sampler(lambda: readyz(direct.admin_port)) as ready,
        spool_depth_sampler(spooled.admin_port) as depth,
        Load(
            direct.address, "/in", SECRET, clients=4, max_seconds=2 + freeze_s + LOAD_AFTER_S
        ) as direct_load,
        Load(
            spooled.address, "/in", SECRET, clients=4, max_seconds=2 + freeze_s + LOAD_AFTER_S
        ) as spooled_load,
    ):
        time.sleep(2)
        began = time.monotonic()
        own_broker.process.send_signal(signal.SIGSTOP)
        time.sleep(freeze_s)
        own_broker.process.send_signal(signal.SIGCONT)
        ended = time.monotonic()
    check_pair(
        f"broker SIGSTOP {freeze_s}s (ack timeout {ACK_TIMEOUT_S}s)",
        own_broker.address,
        pair,
        (direct_load, spooled_load),
        ready,
        depth,
        (began, ended),
    )
    assert "producer rebuilt" in direct.log()


def test_broker_restarted_empty_recovers(tmp_path):
    port = embedded_broker.free_port()
    broker = embedded_broker.start(port=port, log=tmp_path / "broker.log")
    launcher = Launcher(broker, tmp_path)
    try:
        pair = start_pair(launcher, tmp_path, "restart")
        (direct, _), (spooled, _) = pair
        with (
            Sampler(lambda: readyz(direct.admin_port)) as ready,
            spool_depth_sampler(spooled.admin_port) as depth,
            Load(
                direct.address, "/in", SECRET, clients=4, max_seconds=2 + 3 + LOAD_AFTER_S
            ) as direct_load,
            Load(
                spooled.address, "/in", SECRET, clients=4, max_seconds=2 + 3 + LOAD_AFTER_S
            ) as spooled_load,
        ):
            time.sleep(2)
            began = time.monotonic()
            broker.stop()  # memory-only: its topics and records are gone with it
            stopped = time.monotonic()
            time.sleep(3)
            broker = embedded_broker.start(port=port, log=tmp_path / "broker.log")
            ended = time.monotonic()
        check_pair(
            "broker restarted empty",
            broker.address,
            pair,
            (direct_load, spooled_load),
            ready,
            depth,
            (began, ended),
            counted_since=stopped,  # what the old broker acked died with it
        )
        assert "created again" in direct.log() and "producer rebuilt" in direct.log()
    finally:
        launcher.stop_all()
        broker.stop()


def behind_proxy(
    tmp_path: Path,
) -> tuple[int, TcpProxy, embedded_broker.Broker, Launcher]:
    """A broker that advertises a ``TcpProxy``'s port (so its link can be cut), and a launcher
    for hookds that use it: (broker port, proxy, broker, launcher)."""
    broker_port = embedded_broker.free_port()
    proxy = TcpProxy(broker_port)
    broker = embedded_broker.start(
        port=broker_port, advertised_port=proxy.port, log=tmp_path / "broker.log"
    )
    return broker_port, proxy, broker, Launcher(broker, tmp_path)


def test_link_cut_mid_load_spools_then_forwards(tmp_path):
    broker_port, proxy, broker, launcher = behind_proxy(tmp_path)
    try:
        topic = unique_topic("cut")
        hookd = launcher.start(
            [route(topic)],
            kafka={"ack_timeout_s": 2},
            broker_address=f"127.0.0.1:{proxy.port}",
            spool={"path": str(tmp_path / "spool")},
        )
        deepest = 0.0
        with Load(hookd.address, "/in", SECRET, clients=8, max_seconds=10) as load:
            time.sleep(2)
            proxy.cut()
            for _ in range(16):
                time.sleep(0.25)
                deepest = max(deepest, metric(hookd.admin_port, "hookd_spool_depth"))
            proxy.restore()
        assert deepest > 0, "requests during the cut should have been spooled"
        # after the link returns the forwarder drains the spool
        assert wait_for(lambda: metric(hookd.admin_port, "hookd_spool_depth") == 0, 30)
        lost = report(
            "link cut 4 s, fallback spool",
            load,
            published(f"127.0.0.1:{broker_port}", topic, len(load.accepted)),
        )
        print(f"deepest spool during the cut: {deepest:g} records")
        assert not lost
        assert load.statuses.get(200, 0) > 0 and set(load.statuses) <= {200, 503}
    finally:
        launcher.stop_all()
        broker.stop()
        proxy.cut()


def spool_rows(path: Path) -> int:
    """Records a spool's log holds that are not forwarded yet (read without its lock)."""
    return sum(1 for _ in pending_frames(path))


def test_fewer_workers_forward_every_spool_file(tmp_path):
    broker_port, proxy, broker, launcher = behind_proxy(tmp_path)
    spool_dir = tmp_path / "spool"
    try:
        topic = unique_topic("shrink")
        settings = {
            "routes": [route(topic, ack="spool")],
            "kafka": {"ack_timeout_s": ACK_TIMEOUT_S},
            "broker_address": f"127.0.0.1:{proxy.port}",
            "spool": {"path": str(spool_dir)},
        }
        two = launcher.start(server={"workers": 2}, **settings)
        proxy.cut()
        with Load(two.address, "/in", SECRET, clients=8, max_seconds=4) as load:
            pass
        assert two.stop() == 0
        left = {index: spool_rows(spool_dir / f"spool-{index}") for index in (0, 1)}
        print(f"\nspooled by 2 workers with the link cut: {left}")
        assert left[0] > 0 and left[1] > 0, "both workers should hold records"
        proxy.restore()
        one = launcher.start(server={"workers": 1}, **settings)
        in_kafka = published(f"127.0.0.1:{broker_port}", topic, len(load.accepted), timeout=60)
        lost = report("2 workers spool, restart with 1", load, in_kafka)
        assert not lost
        assert wait_for(lambda: not (spool_dir / "spool-1").exists(), 30)
        assert "adopting" in one.log()
    finally:
        launcher.stop_all()
        broker.stop()
        proxy.cut()


def test_offline_boot_serves_from_the_spool_and_forwards_when_the_broker_comes(tmp_path):
    port = embedded_broker.free_port()
    launcher = Launcher(None, tmp_path)
    spooled_topic, direct_topic = unique_topic("offline-spooled"), unique_topic("offline-direct")
    routes = [
        route(spooled_topic, path="/spooled"),  # fallback defaults to the spool
        route(direct_topic, path="/direct", fallback="reject"),
    ]
    broker = None
    try:
        started = time.monotonic()
        hookd = launcher.start(
            routes,
            kafka={"ack_timeout_s": ACK_TIMEOUT_S, "connect_timeout_s": 1},
            broker_address=f"127.0.0.1:{port}",
            spool={"path": str(tmp_path / "spool")},
            ready=False,
        )

        def send(path: str, body: bytes) -> int:
            try:
                return request(hookd.address, segment_request(path, body, SECRET)).status
            except OSError:
                return 0

        assert wait_for(lambda: send("/spooled", b'{"n":-1}') == 200, 30, 0.05)
        serving_after = time.monotonic() - started
        print(f"\noffline boot: serving 2xx from the spool {serving_after:.1f}s after start")
        assert serving_after < 8
        bodies = [f'{{"n":{n}}}'.encode() for n in range(50)]
        assert all(send("/spooled", body) == 200 for body in bodies)
        refused = request(hookd.address, segment_request("/direct", b"{}", SECRET))
        assert refused.status == 503 and refused.headers[b"retry-after"]
        assert metric(hookd.admin_port, "hookd_spool_depth") == 51
        assert "starting offline" in hookd.log()

        broker = embedded_broker.start(port=port, log=tmp_path / "broker.log")
        arrived = published(broker.address, spooled_topic, 51, timeout=60)
        assert set(bodies) | {b'{"n":-1}'} <= arrived
        assert wait_for(lambda: send("/direct", b'{"after":1}') == 200, 30)
        assert b'{"after":1}' in published(broker.address, direct_topic, 1)
        assert wait_for(lambda: metric(hookd.admin_port, "hookd_spool_depth") == 0, 10)
    finally:
        launcher.stop_all()
        if broker is not None:
            broker.stop()


def test_a_poison_record_in_the_spool_does_not_stop_the_ones_behind_it(
    own_broker, launcher, tmp_path
):
    topic = unique_topic("poison")
    spool_dir = tmp_path / "spool"
    too_large = b"x" * 1_100_000  # beyond the producer's message.max.bytes: refused for good
    values = [b'{"n":1}', too_large, b'{"n":2}', b'{"n":3}']

    async def fill() -> None:
        spool = await Spool.open(spool_dir, 64 * 1024 * 1024)
        for value in values:
            headers = (("hookd-route", b"/in"),)
            await spool.append(Record(topic, None, value, headers, int(time.time() * 1000)))
        await spool.close()

    asyncio.run(fill())
    hookd = launcher.start([route(topic)], spool={"path": str(spool_dir)})
    arrived = [r.value() for r in read_topic(own_broker.address, topic, 3, timeout=30)]
    assert arrived == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert wait_for(lambda: metric(hookd.admin_port, "hookd_spool_dead_letters") == 1, 10)
    assert metric(hookd.admin_port, "hookd_spool_depth") == 0
    assert "set aside as a dead letter" in hookd.log() and "route /in" in hookd.log()


def test_sigkill_with_spool_ack_then_restart(own_broker, launcher, tmp_path):
    topic = unique_topic("kill")
    spool = {"path": str(tmp_path / "spool")}
    first = launcher.start([route(topic, ack="spool")], spool=spool)
    with Load(first.address, "/in", SECRET, clients=8, max_seconds=4, tag="first") as load:
        time.sleep(2)
        first.signal(signal.SIGKILL)
    first.wait(10)
    left = spool_rows(tmp_path / "spool" / "spool-0")
    print(f"\nSIGKILL left {left} records in the spool")
    assert left > 0, "the kill should have landed while records waited in the spool"
    # the same spool, a new process: it forwards what the killed one had not
    second = launcher.start([route(topic, ack="spool")], spool=spool)
    wait_for(lambda: metric(second.admin_port, "hookd_spool_depth") == 0, 30)
    lost = report(
        "SIGKILL with ack=spool, restart",
        load,
        published(own_broker.address, topic, len(load.accepted)),
    )
    assert len(load.accepted) > 20
    assert not lost


def test_sigterm_mid_load_with_spool_hands_it_over(own_broker, launcher, tmp_path):
    topic = unique_topic("term")
    spool = {"path": str(tmp_path / "spool")}
    first = launcher.start([route(topic, ack="spool")], spool=spool)
    with Load(first.address, "/in", SECRET, clients=8, max_seconds=5, tag="term") as load:
        time.sleep(2)
        first.signal(signal.SIGTERM)
        assert first.wait(20) == 0
    # the broker is up: the drain forwards the spool before exiting
    assert "spool closed with 0 records" in first.log()
    launcher.start([route(topic, ack="spool")], spool=spool)  # forwards what is left
    lost = report(
        "SIGTERM with ack=spool, restart",
        load,
        published(own_broker.address, topic, len(load.accepted)),
    )
    assert len(load.accepted) > 20
    assert not lost


SHOPIFY_SECRET, SLACK_SECRET = "shopify-fault", "slack-fault"


def post(path: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: hookd\r\nContent-Type: application/json\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def shopify_request(body: bytes) -> bytes:
    """Signed as Shopify signs: base64 HMAC-SHA256 of the body with the app's secret."""
    digest = hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()
    return post(
        "/shopify",
        body,
        [
            ("X-Shopify-Hmac-Sha256", base64.b64encode(digest).decode()),
            ("X-Shopify-Webhook-Id", str(uuid.uuid4())),
            ("X-Shopify-Topic", "orders/create"),
        ],
    )


def slack_request(body: bytes) -> bytes:
    """Signed as Slack signs: v0= hex HMAC-SHA256 of v0:{timestamp}:{body}."""
    timestamp = str(int(time.time()))
    message = f"v0:{timestamp}:".encode() + body
    signature = hmac.new(SLACK_SECRET.encode(), message, hashlib.sha256).hexdigest()
    return post(
        "/slack",
        body,
        [("X-Slack-Request-Timestamp", timestamp), ("X-Slack-Signature", f"v0={signature}")],
    )


class SignedLoad(Load):
    """``Load`` with each body signed by a provider's scheme (``sign(body)`` → request bytes)."""

    def __init__(
        self,
        address: tuple[str, int],
        sign: Callable[[bytes], bytes],
        clients: int,
        max_seconds: float,
        tag: str,
    ) -> None:
        super().__init__(address, "", b"", clients, max_seconds, tag)
        self.sign = sign

    def request(self, body: bytes) -> bytes:
        return self.sign(body)


def test_answers_come_inside_the_providers_timeout_while_the_broker_is_frozen(
    own_broker, launcher, tmp_path
):
    """Shopify gives up after 5 s and Slack after 3 s; Kafka's ack timeout here is 5 s. With
    the broker frozen for 8 s, every delivery still gets its 2xx in time (the default
    respond_within_s: 4 s and 2.5 s), from the spool, and is in Kafka after the thaw."""
    freeze_s = 8
    shopify_topic, slack_topic = unique_topic("deadline-shopify"), unique_topic("deadline-slack")
    shopify_route = {"path": "/shopify", "topic": shopify_topic, "verify": "shopify"}
    slack_route = {"path": "/slack", "topic": slack_topic, "verify": "slack"}
    hookd = launcher.start(
        [shopify_route | {"secrets": [SHOPIFY_SECRET]}, slack_route | {"secrets": [SLACK_SECRET]}],
        kafka={"ack_timeout_s": 5},
        spool={"path": str(tmp_path / "spool")},  # fallback = "spool" by default
    )
    seconds = 2 + freeze_s + 6
    try:
        with (
            SignedLoad(hookd.address, shopify_request, 3, seconds, "shopify") as shopify,
            SignedLoad(hookd.address, slack_request, 3, seconds, "slack") as slack,
        ):
            time.sleep(2)
            began = time.monotonic()
            own_broker.process.send_signal(signal.SIGSTOP)
            time.sleep(freeze_s)
            own_broker.process.send_signal(signal.SIGCONT)
            ended = time.monotonic()
    finally:
        own_broker.process.send_signal(signal.SIGCONT)
    assert metric(hookd.admin_port, 'hookd_spooled_total{reason="fallback"}') > 0
    assert wait_for(lambda: metric(hookd.admin_port, "hookd_spool_depth") == 0, 30)
    for name, load, topic, limit in (
        ("shopify", shopify, shopify_topic, 4.5),
        ("slack", slack, slack_topic, 2.8),
    ):
        worst = max(done - sent for sent, done, *_ in load.answers)
        frozen = [done - sent for sent, done, *_ in load.answers if began <= sent < ended]
        print(
            f"\n{name}: {len(load.answers)} answers, {len(frozen)} sent while frozen; worst "
            f"answer {worst:.2f}s (limit {limit}s), worst while frozen {max(frozen):.2f}s"
        )
        assert set(load.statuses) == {200}, load.statuses
        assert worst < limit, worst
        # the freeze landed mid-load: answers before, during and after it
        for start, end in ((0.0, began), (began, ended), (ended, float("inf"))):
            assert load.statuses_between(start, end).get(200, 0) > 0, (name, start, end)
        in_kafka = published(own_broker.address, topic, len(load.accepted))
        assert not report(f"{name}, broker SIGSTOP {freeze_s}s", load, in_kafka)
