"""Issue 14 over a real process: the whole config in $HOOKD_CONFIG_TOML (Quix Cloud's way to
several routes without a rebuild), --admin-listen, and worker mode's start-up lines naming the
admin address rather than a worker's private socket."""

from __future__ import annotations

import os
import subprocess
import sys

import embedded_broker
from embedded_broker import read_topic
from http_client import request, segment_request
from support import ROOT, HookdProcess, http_get, render_config, unique_topic, wait_ready

SECRET_A, SECRET_B = "first-secret", "second-secret"


def spawn(tmp_path, args: list[str], env: dict[str, str], port: int, admin_port: int):
    log_path = tmp_path / "hookd.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "hookd.cli", "serve", *args],
        stdout=open(log_path, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    hookd = HookdProcess(process, port, admin_port, tmp_path / "none.toml", log_path)
    try:
        wait_ready(hookd)
    except BaseException:
        hookd.stop()
        raise
    return hookd


def test_config_toml_variable_admin_listen_override_and_worker_start_lines(broker, tmp_path):
    port, admin_port = embedded_broker.free_port(), embedded_broker.free_port()
    topic_a, topic_b = unique_topic("toml-a"), unique_topic("toml-b")
    text = render_config(
        # the file's admin address is overridden on the command line
        {"listen": f"127.0.0.1:{port}", "admin_listen": "127.0.0.1:1", "workers": 2},
        {"broker_address": broker.address, "ack_timeout_s": 5},
        [
            {"path": "/a", "topic": "${TOPIC_A}", "verify": "segment", "secrets": ["${SEC_A}"]},
            {"path": "/b", "topic": topic_b, "verify": "segment", "secrets": ["${SEC_B}"]},
        ],
    )
    env = {
        **os.environ,
        "HOOKD_CONFIG_TOML": text,
        # what the image sets: the variable wins over it
        "HOOKD_CONFIG": str(tmp_path / "does-not-exist.toml"),
        "TOPIC_A": topic_a,
        "SEC_A": SECRET_A,
        "SEC_B": SECRET_B,
    }
    hookd = spawn(tmp_path, ["--admin-listen", f"127.0.0.1:{admin_port}"], env, port, admin_port)
    try:
        assert http_get(admin_port, "/readyz")[0] == 200
        a = request(hookd.address, segment_request("/a", b'{"n":"a"}', SECRET_A.encode()))
        b = request(hookd.address, segment_request("/b", b'{"n":"b"}', SECRET_B.encode()))
        assert (a.status, b.status) == (200, 200), (a, b)
        [record_a] = read_topic(broker.address, topic_a, 1)
        [record_b] = read_topic(broker.address, topic_b, 1)
        assert (record_a.value(), record_b.value()) == (b'{"n":"a"}', b'{"n":"b"}')
    finally:
        assert hookd.stop() == 0
    log = hookd.log()
    assert "config from $HOOKD_CONFIG_TOML" in log
    supervisor = f"supervisor: 2 workers listening on 127.0.0.1:{port}"
    assert f"{supervisor} (admin 127.0.0.1:{admin_port})" in log
    starts = [line for line in log.splitlines() if "hookd listening on" in line]
    assert len(starts) == 2, log
    for line in starts:
        assert f"(admin 127.0.0.1:{admin_port})" in line and ".sock" not in line, line
