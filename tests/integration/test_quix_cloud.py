"""The Quix Cloud code path, end to end, against a local stand-in for the Quix Portal API.

With no ``kafka.broker_address`` and ``Quix__Sdk__Token`` in the environment, quixstreams asks
the Portal for the broker's connection settings and for the workspace-prefixed topic; the
stand-in (tests/quix_portal.py) answers with the embedded broker, so the record can be read
back from the real topic ``ws1-webhooks``.
"""

from __future__ import annotations

import subprocess
import sys
import time

from embedded_broker import read_topic, topic_names
from http_client import request, segment_request
from quix_portal import QuixPortal
from support import ROOT, render_config, unique_topic

SECRET = b"quix-secret"
TOKEN = "sdk-token-for-tests"
WORKSPACE = "ws1"

#: What quixstreams 3.28.1 asks the Portal for, in order, for one new topic: the connection
#: settings, the topic (404), its creation, the topic again, then the list until it is Ready.
EXPECTED_REQUESTS = [
    ("GET", f"/workspaces/{WORKSPACE}/broker/librdkafka"),
    ("GET", f"/{WORKSPACE}/topics/webhooks"),
    ("POST", f"/{WORKSPACE}/topics"),
    ("GET", f"/{WORKSPACE}/topics/webhooks"),
    ("GET", f"/{WORKSPACE}/topics"),
]


def quix_env(portal: QuixPortal, token: str = TOKEN, output: str = "webhooks") -> dict[str, str]:
    """What Quix Cloud injects into a deployment, plus the topic variable a route names."""
    return {
        "Quix__Sdk__Token": token,
        "Quix__Portal__Api": portal.url,
        "Quix__Workspace__Id": WORKSPACE,
        "output": output,
    }


ROUTE = {"path": "/segment", "topic": "${output}", "verify": "segment", "secrets": ["quix-secret"]}
#: No broker address: Quix Cloud mode (the launcher writes one unless told to leave it out).
NO_BROKER = {"broker_address": None}


def test_publishes_to_the_workspace_topic_through_the_portal(broker, start_hookd):
    with QuixPortal(broker.address, TOKEN, WORKSPACE) as portal:
        hookd = start_hookd([ROUTE], kafka=NO_BROKER, env=quix_env(portal))
        body = b'{ "type":"track", "event":"caf\xc3\xa9 in Quix" }\n'
        answer = request(hookd.address, segment_request("/segment", body, SECRET))
        assert answer.status == 200, answer
        [record] = read_topic(broker.address, f"{WORKSPACE}-webhooks", 1)
    assert record.topic() == "ws1-webhooks"
    assert record.value() == body
    headers = dict(record.headers())
    assert headers["hookd-route"] == b"/segment"
    assert headers["hookd-verify"] == b"segment"
    assert headers["hookd-source-ip"] == b"127.0.0.1"
    assert headers["content-type"] == b"application/json"
    assert abs(int(headers["hookd-received-at"]) - time.time() * 1000) < 60_000

    assert portal.requests() == EXPECTED_REQUESTS
    for served in portal.served:
        assert served.authorization == f"Bearer {TOKEN}"
        assert served.x_version == "2.0"
    assert [s.status for s in portal.served] == [200, 404, 200, 200, 200]
    topics = topic_names(broker.address)
    assert "ws1-webhooks" in topics
    assert "webhooks" not in topics  # quixstreams produced to topic.name, not the Quix name


def test_check_prints_quix_cloud_mode(tmp_path):
    config = tmp_path / "hookd.toml"
    config.write_text(
        render_config(
            {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}, {"ack_timeout_s": 5}, [ROUTE]
        )
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "Quix__Sdk__Token": TOKEN,
        "Quix__Portal__Api": "http://127.0.0.1:9",
        "Quix__Workspace__Id": WORKSPACE,
        "output": "webhooks",
    }
    result = subprocess.run(
        [sys.executable, "-m", "hookd.cli", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "kafka Quix Cloud (Quix__Sdk__Token), ack_timeout_s 5" in result.stdout
    assert "route /segment -> topic webhooks:" in result.stdout


def test_wrong_token_is_a_clear_startup_error(broker, start_hookd):
    with QuixPortal(broker.address, TOKEN, WORKSPACE) as portal:
        hookd = start_hookd(
            [ROUTE], kafka=NO_BROKER, env=quix_env(portal, token="not-the-token"), ready=False
        )
        assert hookd.wait(60) == 1
    log = hookd.log()
    assert "cannot start: " in log
    assert "401" in log
    assert f"/workspaces/{WORKSPACE}/broker/librdkafka" in log
    assert "Traceback" not in log
    assert portal.requests() == [("GET", f"/workspaces/{WORKSPACE}/broker/librdkafka")]
    assert portal.served[0].status == 401


def test_quix_broker_address_switches_quix_mode_off(broker, start_hookd):
    """quixstreams reads ``Quix__Broker__Address`` itself and then never asks the Portal: the
    route's topic is the plain name. Documented in the README as a trap; pinned here."""
    topic = unique_topic("quix-off")
    with QuixPortal(broker.address, TOKEN, WORKSPACE) as portal:
        env = {**quix_env(portal, output=topic), "Quix__Broker__Address": broker.address}
        hookd = start_hookd([ROUTE], kafka=NO_BROKER, env=env)
        answer = request(hookd.address, segment_request("/segment", b"{}", SECRET))
        assert answer.status == 200
        [record] = read_topic(broker.address, topic, 1)
    assert record.value() == b"{}"
    assert portal.requests() == []
