"""Fault tests against the real broker, each counting what was answered 2xx and what is in
Kafka afterwards: lost must be 0.

Each test runs its own broker (the faults are done to it) and prints its figures
(``pytest -s`` shows them).
"""

from __future__ import annotations

import signal
import time

import embedded_broker
import pytest
from support import Launcher, Load, TcpProxy, metric, read_topic, unique_topic

SECRET = b"fault"


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


def report(name: str, load: Load, published: set[bytes]) -> set[bytes]:
    accepted = set(load.accepted)
    lost = accepted - published
    total = sum(load.statuses.values())
    print(
        f"\n{name}: requests {total}, 2xx {len(accepted)}, 503 {load.statuses.get(503, 0)}, "
        f"other {total - len(accepted) - load.statuses.get(503, 0)}, in Kafka "
        f"{len(published & accepted)}, lost {len(lost)}"
    )
    return lost


def published(broker_address: str, topic: str, expected: int, timeout: float = 30) -> set[bytes]:
    return {r.value() for r in read_topic(broker_address, topic, expected, timeout=timeout)}


def test_broker_frozen_mid_load(own_broker, launcher):
    topic = unique_topic("frozen")
    hookd = launcher.start([route(topic)], kafka={"ack_timeout_s": 2})
    with Load(hookd.address, "/in", SECRET, clients=8, max_seconds=12) as load:
        time.sleep(2)
        own_broker.process.send_signal(signal.SIGSTOP)
        time.sleep(4)
        own_broker.process.send_signal(signal.SIGCONT)
    lost = report(
        "broker SIGSTOP 4 s", load, published(own_broker.address, topic, len(load.accepted))
    )
    assert not lost
    assert load.statuses.get(503, 0) > 0, "the stall should have been answered 503"
    assert set(load.statuses) <= {200, 503}
    # it serves again after the thaw
    assert load.statuses[200] > 0 and hookd.process.poll() is None


def test_link_cut_mid_load_spools_then_forwards(tmp_path):
    broker_port = embedded_broker.free_port()
    proxy = TcpProxy(broker_port)
    broker = embedded_broker.start(
        port=broker_port, advertised_port=proxy.port, log=tmp_path / "broker.log"
    )
    launcher = Launcher(broker, tmp_path)
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
        deadline = time.monotonic() + 30
        while metric(hookd.admin_port, "hookd_spool_depth") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric(hookd.admin_port, "hookd_spool_depth") == 0
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


def test_sigkill_with_spool_ack_then_restart(own_broker, launcher, tmp_path):
    topic = unique_topic("kill")
    spool = {"path": str(tmp_path / "spool")}
    first = launcher.start([route(topic, ack="spool")], spool=spool)
    with Load(first.address, "/in", SECRET, clients=8, max_seconds=4, tag="first") as load:
        time.sleep(2)
        first.signal(signal.SIGKILL)
    first.wait(10)
    # the same spool, a new process: it forwards what the killed one had not
    second = launcher.start([route(topic, ack="spool")], spool=spool)
    deadline = time.monotonic() + 30
    while metric(second.admin_port, "hookd_spool_depth") and time.monotonic() < deadline:
        time.sleep(0.2)
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
