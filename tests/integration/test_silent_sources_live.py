"""Silent sources on a real hookd with two workers: the supervisor's merged /metrics carries
the last accepted / rejected times (the latest of the workers, not a sum) and
``hookd_route_silent`` (silent only while every worker is)."""

from __future__ import annotations

import time

from embedded_broker import wait_for
from http_client import request, segment_request
from support import http_get, unique_topic

SECRET = b"quiet-secret"
EXPECT_EVERY_S = 3.0


def series(port: int, family: str) -> dict[str, float]:
    text = http_get(port, "/metrics")[1].decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(family + "{"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_two_workers_merge_the_gauges(start_hookd):
    topic = unique_topic("silent")
    routes = [
        {
            "path": "/watched",
            "topic": topic,
            "verify": "segment",
            "secrets": [SECRET.decode()],
            "expect_every_s": EXPECT_EVERY_S,
        },
        {"path": "/unwatched", "topic": topic, "verify": "segment", "secrets": [SECRET.decode()]},
    ]
    started = time.time()
    hookd = start_hookd(routes, server={"workers": 2})
    admin = hookd.admin_port
    assert wait_for(lambda: http_get(admin, "/metrics")[1].count(b"hookd_workers 2"), 30)
    silent = 'hookd_route_silent{route="/watched"}'
    # only the route with expect_every_s has a sample; nothing accepted, nothing stamped
    assert set(series(admin, "hookd_route_silent")) == {silent}
    assert series(admin, "hookd_last_accepted_timestamp_seconds") == {}
    # nothing for longer than expect_every_s since start: silent on both workers
    assert wait_for(lambda: series(admin, "hookd_route_silent") == {silent: 1}, 15)

    # one delivery reaches one worker: the other is still silent, the route is not
    sent = time.time()
    body = b'{"type":"track","messageId":"silent-1"}'
    assert request(hookd.address, segment_request("/watched", body, SECRET)).status == 200
    assert series(admin, "hookd_route_silent") == {silent: 0}
    [accepted] = series(admin, "hookd_last_accepted_timestamp_seconds").items()
    assert accepted[0] == 'hookd_last_accepted_timestamp_seconds{route="/watched"}'
    assert sent - 1 <= accepted[1] <= time.time() + 1  # the latest, not a sum of workers
    assert series(admin, "hookd_last_rejected_timestamp_seconds") == {}

    # refusals stamp the rejected time, on every route, and do not count as life
    bad = segment_request("/unwatched", b"{}", b"wrong")
    assert request(hookd.address, bad).status == 401
    [rejected] = series(admin, "hookd_last_rejected_timestamp_seconds").items()
    assert rejected[0] == 'hookd_last_rejected_timestamp_seconds{route="/unwatched"}'
    assert started <= rejected[1] <= time.time() + 1
    assert wait_for(lambda: series(admin, "hookd_route_silent") == {silent: 1}, 15)
