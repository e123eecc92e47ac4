"""Logs: JSON lines, one per refusal with an id and a reason, and never a secret, a signature,
a query string or a body."""

from __future__ import annotations

import json
import signal
import time

from http_client import request, segment_request, segment_signature
from support import unique_topic

SECRET = "log-secret-7f3a9c"
OLD_SECRET = "log-old-secret-1d2e"


def test_json_logs_carry_refusals_and_never_secrets(broker, start_hookd):
    topic = unique_topic("logs")
    hookd = start_hookd(
        [{"path": "/in", "topic": topic, "verify": "segment", "secrets": [SECRET, OLD_SECRET]}],
        server={"access_log": True},
        env={"HOOKD_LOG_FORMAT": "json"},
    )
    body = b'{"marker":"body-marker-5b8e"}'
    good = segment_signature(SECRET.encode(), body).decode()
    wrong = segment_signature(b"attacker", body).decode()
    assert request(hookd.address, segment_request("/in", body, SECRET.encode())).status == 200
    assert request(hookd.address, segment_request("/in", body, b"attacker")).status == 401
    missing = b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    assert request(hookd.address, missing).status == 401
    lost = b"POST /nope?token=query-secret-88aa HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    assert request(hookd.address, lost).status == 404
    assert request(hookd.address, b"GARBAGE\r\n\r\n").status == 400
    # h11 quotes the bytes it refuses; hookd must not pass them on
    bad_line = b"POST /in?api_key=query-secret-88aa HTTP/1.1 junk\r\nHost: x\r\n\r\n"
    assert request(hookd.address, bad_line).status == 400
    bad_header = b"POST /in HTTP/1.1\r\nHost: x\r\nAuthorization Bearer header-secret-3c\r\n\r\n"
    assert request(hookd.address, bad_header).status == 400
    hookd.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while '"reloaded: 1 routes"' not in hookd.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    hookd.signal(signal.SIGTERM)
    assert hookd.wait(30) == 0

    output = hookd.log()
    leaks = (SECRET, OLD_SECRET, good, wrong, "body-marker-5b8e", "query-secret-88aa")
    for secret in (*leaks, "header-secret-3c"):
        assert secret not in output, f"{secret!r} leaked into the logs"
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    refusals = [line for line in lines if line["message"] == "refused"]
    assert [(r["status"], r["reason"]) for r in refusals] == [
        (401, "signature mismatch"),
        (401, "missing x-signature header"),
        (404, "no route for this path"),
        (400, "malformed request: illegal request line"),
        (400, "malformed request: illegal request line"),
        (400, "malformed request: illegal header line"),
    ]
    assert all(len(r["request_id"]) == 16 and r["source_ip"] == "127.0.0.1" for r in refusals)
    assert len({r["request_id"] for r in refusals}) == 6
    assert any(line["message"] == "answered" and line["status"] == 200 for line in lines)
    messages = [line["message"] for line in lines]
    assert any(m.startswith("hookd listening on") for m in messages)
    assert any(m.startswith("reloaded") for m in messages)
    assert any(m.startswith("drained in") for m in messages)
    assert {line["level"] for line in lines} <= {"debug", "info", "warning", "error"}
