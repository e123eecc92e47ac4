"""Silent sources: the last accepted / rejected time per route, ``expect_every_s`` and
``hookd_route_silent``, and how the supervisor merges them across workers (issue 15, item 2)."""

from __future__ import annotations

import pytest

from hookd.config import ConfigError, validate
from hookd.metrics import NO_ROUTE, Metrics, merge_expositions


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(text: bytes, family: str) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line.startswith(family + "{") or line.startswith(family + " "):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def accepted(text: bytes) -> dict[str, float]:
    return samples(text, "hookd_last_accepted_timestamp_seconds")


def rejected(text: bytes) -> dict[str, float]:
    return samples(text, "hookd_last_rejected_timestamp_seconds")


def silent(text: bytes) -> dict[str, float]:
    return samples(text, "hookd_route_silent")


def test_timestamps_are_absent_until_the_first_request_but_the_families_are_there():
    text = Metrics(Clock()).render()
    assert accepted(text) == {} and rejected(text) == {} and silent(text) == {}
    for family in (
        "hookd_last_accepted_timestamp_seconds",
        "hookd_last_rejected_timestamp_seconds",
        "hookd_route_silent",
    ):
        assert f"# TYPE {family} gauge".encode() in text


def test_2xx_stamps_accepted_4xx_stamps_rejected_5xx_and_unrouted_stamp_nothing():
    clock = Clock(1000.0)
    metrics = Metrics(clock)
    metrics.request("/gh", 200)
    clock.now = 1001.5
    metrics.request("/gh", 202)  # any 2xx: a handshake, a redelivery answered from the window
    clock.now = 1002.0
    metrics.request("/gh", 401)
    clock.now = 1003.0
    metrics.request("/gh", 413)
    clock.now = 1004.0
    metrics.request("/gh", 503)  # hookd's own trouble: neither
    metrics.request(NO_ROUTE, 404)  # before routing: no route to stamp
    metrics.request(NO_ROUTE, 200)
    metrics.request("/stripe", 400)
    text = metrics.render()
    assert accepted(text) == {'hookd_last_accepted_timestamp_seconds{route="/gh"}': 1001.5}
    assert rejected(text) == {
        'hookd_last_rejected_timestamp_seconds{route="/gh"}': 1003.0,
        'hookd_last_rejected_timestamp_seconds{route="/stripe"}': 1004.0,
    }


def test_a_dedup_hit_is_accepted():
    # The HTTP layer counts a redelivery with dedup_hit and answers it 200 through request().
    clock = Clock(50.0)
    metrics = Metrics(clock)
    metrics.dedup_hit("/gh")
    metrics.request("/gh", 200)
    assert accepted(metrics.render()) == {
        'hookd_last_accepted_timestamp_seconds{route="/gh"}': 50.0
    }


def test_expect_every_s_turns_silent_and_back():
    clock = Clock(0.0)
    metrics = Metrics(clock)
    metrics.expect_traffic(lambda: [("/gh", 60.0), ("/stripe", 10.0)])
    # no request yet: counted from the process start
    assert silent(metrics.render()) == {
        'hookd_route_silent{route="/gh"}': 0,
        'hookd_route_silent{route="/stripe"}': 0,
    }
    clock.now = 10.0  # exactly expect_every_s: not yet
    assert metrics.silent() == [("/gh", 0), ("/stripe", 0)]
    clock.now = 10.5
    assert metrics.silent() == [("/gh", 0), ("/stripe", 1)]
    metrics.request("/stripe", 401)  # a refusal is no sign of life
    assert metrics.silent() == [("/gh", 0), ("/stripe", 1)]
    metrics.request("/stripe", 200)
    assert metrics.silent() == [("/gh", 0), ("/stripe", 0)]
    clock.now = 61.0
    assert metrics.silent() == [("/gh", 1), ("/stripe", 1)]
    metrics.request("/gh", 200)
    assert silent(metrics.render()) == {
        'hookd_route_silent{route="/gh"}': 0,
        'hookd_route_silent{route="/stripe"}': 1,
    }


def test_only_routes_with_expect_every_s_get_a_silent_sample_read_at_render_time():
    metrics = Metrics(Clock())
    routes = [("/gh", 60.0)]
    metrics.expect_traffic(lambda: routes)
    metrics.request("/other", 200)
    assert set(silent(metrics.render())) == {'hookd_route_silent{route="/gh"}'}
    routes[:] = [("/new", 5.0)]  # a reload changed the table
    assert set(silent(metrics.render())) == {'hookd_route_silent{route="/new"}'}


def test_labels_are_escaped():
    metrics = Metrics(Clock(7.0))
    metrics.expect_traffic(lambda: [('/a"b', 1.0)])
    metrics.request('/a"b', 200)
    text = metrics.render()
    assert accepted(text) == {'hookd_last_accepted_timestamp_seconds{route="/a\\"b"}': 7.0}
    assert silent(text) == {'hookd_route_silent{route="/a\\"b"}': 0}


def test_merge_takes_the_latest_time_and_silent_only_when_every_worker_is():
    clock_a, clock_b = Clock(100.0), Clock(100.0)
    a, b = Metrics(clock_a), Metrics(clock_b)
    for worker in (a, b):
        worker.expect_traffic(lambda: [("/gh", 30.0), ("/quiet", 30.0)])
    clock_a.now = 110.25
    a.request("/gh", 200)
    clock_b.now = 120.5
    b.request("/gh", 200)
    b.request("/gh", 401)
    clock_a.now = 125.75
    a.request("/gh", 403)
    # worker a last accepted at 110.25, b at 120.5; at 145 a is silent, b is not
    clock_a.now = clock_b.now = 145.0
    assert a.silent() == [("/gh", 1), ("/quiet", 1)]
    assert b.silent() == [("/gh", 0), ("/quiet", 1)]
    merged = merge_expositions([a.render(), b.render()])
    assert accepted(merged) == {'hookd_last_accepted_timestamp_seconds{route="/gh"}': 120.5}
    assert rejected(merged) == {'hookd_last_rejected_timestamp_seconds{route="/gh"}': 125.75}
    assert silent(merged) == {
        'hookd_route_silent{route="/gh"}': 0,  # b accepted within 30 s
        'hookd_route_silent{route="/quiet"}': 1,  # nobody did
    }
    # the order of the workers does not matter
    swapped = merge_expositions([b.render(), a.render()])
    for family in (accepted, rejected, silent):
        assert family(swapped) == family(merged)


def test_merge_keeps_a_timestamp_only_one_worker_has():
    a, b = Metrics(Clock(5.0)), Metrics(Clock(9.0))
    b.request("/gh", 200)
    merged = merge_expositions([a.render(), b.render()])
    assert accepted(merged) == {'hookd_last_accepted_timestamp_seconds{route="/gh"}': 9.0}


def test_expect_every_s_is_a_positive_route_option():
    route = {"path": "/gh", "topic": "t", "verify": "github", "secrets": ["s"]}
    config = validate({"routes": [{**route, "expect_every_s": 3600}]}, {})
    assert config.routes[0].expect_every_s == 3600
    assert validate({"routes": [route]}, {}).routes[0].expect_every_s is None
    for bad in (0, -5):
        with pytest.raises(ConfigError) as caught:
            validate({"routes": [{**route, "expect_every_s": bad}]}, {})
        assert caught.value.problems[0][0] == "routes[0].expect_every_s"
