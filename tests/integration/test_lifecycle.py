"""Start-up, shutdown and broker trouble: nothing answered 2xx is lost, trouble is a fast 503."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import embedded_broker
import pytest
from embedded_broker import read_topic
from http_client import Client, request, segment_request
from support import ROOT, Launcher, Load, http_get, unique_topic

SECRET = b"life"


def route(topic: str) -> dict[str, object]:
    return {"path": "/in", "topic": topic, "verify": "segment", "secrets": ["life"]}


def test_sigterm_under_load_loses_nothing_answered(broker, start_hookd):
    topic = unique_topic("drain")
    hookd = start_hookd([route(topic)])
    with Load(hookd.address, "/in", SECRET, clients=16, max_seconds=6) as load:
        time.sleep(1.5)
        hookd.signal(signal.SIGTERM)
        assert hookd.wait(20) == 0
    accepted = set(load.accepted)
    assert len(accepted) > 50, load.statuses
    assert set(load.statuses) <= {200, 503}, load.statuses
    published = {r.value() for r in read_topic(broker.address, topic, len(accepted), timeout=20)}
    lost = accepted - published
    print(
        f"\nSIGTERM under load: answers {load.statuses}, 2xx {len(accepted)}, "
        f"in Kafka {len(published)}, lost {len(lost)}"
    )
    assert not lost, f"{len(lost)} of {len(accepted)} answered 2xx are not in Kafka"
    assert "drained in" in hookd.log()


def test_broker_down_gives_fast_503_with_retry_after_and_readyz_off(tmp_path):
    own_broker = embedded_broker.start(log=tmp_path / "broker.log")
    launcher = Launcher(own_broker, tmp_path)
    try:
        topic = unique_topic("down")
        hookd = launcher.start([route(topic)], kafka={"ack_timeout_s": 2})
        assert request(hookd.address, segment_request("/in", b'{"before":1}', SECRET)).status == 200
        own_broker.stop()
        # The first requests may wait for librdkafka's delivery timeout; then hookd knows.
        deadline = time.monotonic() + 20
        answer = None
        while time.monotonic() < deadline:
            answer = request(hookd.address, segment_request("/in", b"{}", SECRET), timeout=10)
            if answer.status == 503:
                break
        assert answer is not None and answer.status == 503
        assert answer.headers[b"retry-after"] == b"5"
        started = time.monotonic()
        for _ in range(5):
            answer = request(hookd.address, segment_request("/in", b"{}", SECRET))
            assert answer.status == 503
        assert time.monotonic() - started < 2.5  # fast, not one delivery timeout each
        wait = time.monotonic() + 10
        while http_get(hookd.admin_port, "/readyz")[0] != 503 and time.monotonic() < wait:
            time.sleep(0.2)
        status, body = http_get(hookd.admin_port, "/readyz")
        assert status == 503
        assert b"broker" in body
        assert hookd.process.poll() is None
    finally:
        launcher.stop_all()
        own_broker.stop()


def test_unreachable_broker_at_startup_is_a_clear_error(tmp_path):
    config = tmp_path / "hookd.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n'
        f'[kafka]\nbroker_address = "127.0.0.1:{embedded_broker.free_port()}"\n'
        "connect_timeout_s = 1\n"
        '[[routes]]\npath = "/in"\ntopic = "t"\nverify = "segment"\nsecrets = ["x"]\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "hookd.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "cannot start: broker not reachable within 1s" in result.stderr


def test_listen_address_in_use_is_a_clear_error(broker, start_hookd):
    first = start_hookd([route(unique_topic())])
    second = start_hookd(
        [route(unique_topic())], server={"listen": f"127.0.0.1:{first.port}"}, ready=False
    )
    assert second.wait(60) == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.log()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_exits_zero_on_signal(broker, start_hookd, signum):
    hookd = start_hookd([route(unique_topic())])
    with Client(hookd.address) as idle_keep_alive:
        idle_keep_alive.send(segment_request("/in", b"{}", SECRET))
        assert idle_keep_alive.response().status == 200
        started = time.monotonic()
        hookd.signal(signum)
        assert hookd.wait(15) == 0
        assert idle_keep_alive.closed_by_peer(2)
    assert time.monotonic() - started < 5
