"""Metrics: names, labels and the text format, and merging workers' expositions."""

from __future__ import annotations

from hookd.metrics import Gauge, Metrics, merge_expositions


def samples(text: bytes) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def worker(requests: int, broker_up: int, oldest_age: float) -> Metrics:
    metrics = Metrics()
    for _ in range(requests):
        metrics.request("/gh", 200)
    metrics.request("/gh", 401)
    metrics.verify_failed("/gh", 'bad "quote"\nnewline')
    metrics.dedup_hit("/gh")
    metrics.delivery_failed("Local: Message timed out")
    metrics.observe_publish(0.003)
    metrics.gauge(Gauge.BROKER_UP, lambda: broker_up)
    metrics.gauge(Gauge.SPOOL_OLDEST_AGE, lambda: oldest_age)
    metrics.gauge(Gauge.IN_FLIGHT_REQUESTS, lambda: 2)
    return metrics


def test_render_names_labels_and_escaping():
    text = worker(3, 1, 0).render()
    values = samples(text)
    assert values['hookd_requests_total{route="/gh",code="200"}'] == 3
    assert values['hookd_requests_total{route="/gh",code="401"}'] == 1
    assert (
        values['hookd_verify_failures_total{route="/gh",reason="bad \\"quote\\"\\nnewline"}'] == 1
    )
    assert values['hookd_dedup_hits_total{route="/gh"}'] == 1
    assert values['hookd_delivery_failures_total{reason="Local: Message timed out"}'] == 1
    assert values['hookd_publish_latency_seconds_bucket{le="0.0025"}'] == 0
    assert values['hookd_publish_latency_seconds_bucket{le="0.005"}'] == 1
    assert values['hookd_publish_latency_seconds_bucket{le="+Inf"}'] == 1
    assert values["hookd_publish_latency_seconds_count"] == 1
    assert values['hookd_build_info{version="0.1.0"}'] == 1
    assert b"# TYPE hookd_publish_latency_seconds histogram" in text
    assert b"# TYPE hookd_requests_total counter" in text


def test_merge_sums_counters_and_histograms_and_keeps_gauge_semantics():
    merged = merge_expositions([worker(3, 1, 5.0).render(), worker(4, 0, 9.5).render()])
    values = samples(merged)
    assert values['hookd_requests_total{route="/gh",code="200"}'] == 7
    assert values['hookd_requests_total{route="/gh",code="401"}'] == 2
    assert values['hookd_publish_latency_seconds_bucket{le="+Inf"}'] == 2
    assert values["hookd_publish_latency_seconds_count"] == 2
    assert values["hookd_in_flight_requests"] == 4  # summed
    assert values["hookd_broker_up"] == 0  # down if any worker cannot reach the broker
    assert values["hookd_spool_oldest_age_seconds"] == 9.5  # the oldest of all
    assert values['hookd_build_info{version="0.1.0"}'] == 1
    assert merged.count(b"# TYPE hookd_requests_total counter") == 1
