"""In-process counters rendered in the Prometheus text format, the table of gauges, and the
merge of several workers' expositions into one.

Plain dicts and ints: an increment on the request path is a dict update, nothing more.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable, Iterable
from enum import Enum

from hookd import __version__

#: Publish latency buckets (seconds): from a same-host broker's ~1 ms to the ack timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Answer time as a fraction of the route's respond_within_s: coarse where answers are quick,
#: fine approaching 1 (the deadline), and two buckets past it for late answers.
DEADLINE_USED_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.5, 2.0)
#: The route label of a request no route took (unknown path, refused before routing).
NO_ROUTE = "-"


class Merge(Enum):
    """How the admin process combines one series' samples from several workers (counters and
    histograms always add up)."""

    SUM = "sum"
    MIN = "min"
    MAX = "max"

    def combine(self, merged: float, value: float) -> float:
        if self is Merge.MIN:
            return min(merged, value)
        if self is Merge.MAX:
            return max(merged, value)
        return merged + value


class Gauge(Enum):
    """Every gauge hookd exposes, declared once: its name, help text and merge rule across
    workers. A gauge read from the serving process is bound with ``Metrics.gauge``; the
    others are rendered by ``Metrics.render`` (per-route ones) or the admin process."""

    def __init__(self, metric: str, help_text: str, merge: Merge) -> None:
        self.metric = metric
        self.help_text = help_text
        self.merge = merge

    #: 1 for the version every worker runs, not one per worker.
    BUILD_INFO = ("hookd_build_info", "hookd version.", Merge.MAX)
    #: The latest of any worker.
    LAST_ACCEPTED = (
        "hookd_last_accepted_timestamp_seconds",
        "Unix time of the route's last request answered 2xx (redeliveries and handshakes "
        "included); absent until the first.",
        Merge.MAX,
    )
    LAST_REJECTED = (
        "hookd_last_rejected_timestamp_seconds",
        "Unix time of the route's last request answered 4xx; absent until the first.",
        Merge.MAX,
    )
    #: A route is silent only when every worker is: the kernel spreads a sender's connections
    #: over them, so one worker's silence says nothing.
    ROUTE_SILENT = (
        "hookd_route_silent",
        "1 when a route with expect_every_s accepted nothing for longer than that (counted "
        "from the process start before its first request), else 0.",
        Merge.MIN,
    )
    IN_FLIGHT_REQUESTS = ("hookd_in_flight_requests", "Requests waiting to be durable.", Merge.SUM)
    IN_FLIGHT_BYTES = (
        "hookd_in_flight_bytes",
        "Body bytes of requests waiting to be durable.",
        Merge.SUM,
    )
    CONNECTIONS = (
        "hookd_connections",
        "Open client connections, TLS handshakes and closing ones included.",
        Merge.SUM,
    )
    RECEIVING_BYTES = (
        "hookd_receiving_bytes",
        "Body bytes received of requests still arriving.",
        Merge.SUM,
    )
    #: Down if any worker cannot reach the broker.
    BROKER_UP = (
        "hookd_broker_up",
        "1 when the broker answered recently and deliveries are not failing.",
        Merge.MIN,
    )
    SPOOL_DEAD_LETTERS = (
        "hookd_spool_dead_letters",
        "Spooled records the broker refused for good, set aside in the spool.",
        Merge.SUM,
    )
    SPOOL_DEPTH = ("hookd_spool_depth", "Records in the spool.", Merge.SUM)
    SPOOL_BYTES = (
        "hookd_spool_bytes",
        "Bytes the spool's segment files hold (max_bytes bounds it).",
        Merge.SUM,
    )
    #: The oldest record of any worker's spool.
    SPOOL_OLDEST_AGE = (
        "hookd_spool_oldest_age_seconds",
        "Age of the oldest spooled record (0 when empty).",
        Merge.MAX,
    )
    #: Rendered by the admin process only (``workers > 1``), merged with the workers' answers.
    WORKERS = ("hookd_workers", "Worker processes answering the supervisor.", Merge.SUM)


class Histogram:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value


class Metrics:
    """Everything hookd counts. Gauges bound with ``gauge`` are read at render time.

    ``clock`` (unix seconds) stamps the last accepted and rejected request per route, and
    dates the process start that ``hookd_route_silent`` counts from before any request came.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started_at = clock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.verify_failures: Counter[tuple[str, str]] = Counter()
        self.delivery_failures: Counter[str] = Counter()
        self.dedup_hits: Counter[str] = Counter()
        self.client_refusals: Counter[tuple[str, str]] = Counter()
        self.rejects_dropped: Counter[str] = Counter()
        self.producer_rebuilds = 0
        self.spooled: Counter[str] = Counter()
        self.publish_latency = Histogram(LATENCY_BUCKETS)
        self.deadline_used_by_route: dict[str, Histogram] = {}
        self.gauges: dict[Gauge, Callable[[], float]] = {}
        #: Route -> unix time of its last 2xx (dedup hits and handshakes included) / 4xx.
        self.last_accepted: dict[str, float] = {}
        self.last_rejected: dict[str, float] = {}
        self._expected: Callable[[], Iterable[tuple[str, float]]] = tuple

    def request(self, route: str, status: int) -> None:
        """An answer on ``route`` (``NO_ROUTE`` before routing); a 2xx also stamps the route's
        last accepted time, a 4xx its last rejected time."""
        self.requests[route, status] += 1
        if route != NO_ROUTE:
            if 200 <= status < 300:
                self.last_accepted[route] = self._clock()
            elif 400 <= status < 500:
                self.last_rejected[route] = self._clock()

    def expect_traffic(self, expected: Callable[[], Iterable[tuple[str, float]]]) -> None:
        """``expected()``, read at render time (a reload changes the routes): ``(route,
        expect_every_s)`` for each route with ``expect_every_s``, the ones that get a
        ``hookd_route_silent`` sample."""
        self._expected = expected

    def silent(self, now: float | None = None) -> list[tuple[str, int]]:
        """``(route, 1)`` for a route that accepted nothing for longer than its
        ``expect_every_s`` (counted from this process's start when it accepted nothing yet),
        ``(route, 0)`` for one that did."""
        now = self._clock() if now is None else now
        return [
            (route, int(now - self.last_accepted.get(route, self.started_at) > every))
            for route, every in sorted(self._expected())
        ]

    def verify_failed(self, route: str, reason: str) -> None:
        self.verify_failures[route, reason] += 1

    def client_refused(self, route: str, reason: str) -> None:
        """A request or connection refused for where it came from: ``reason`` is one of a few
        fixed words (``allow_from``, ``proxy_protocol_missing``, ...), never a value."""
        self.client_refusals[route, reason] += 1

    def reject_dropped(self, route: str) -> None:
        """A refused request on ``route`` got no rejects record: over the rate limit."""
        self.rejects_dropped[route] += 1

    def dedup_hit(self, route: str) -> None:
        self.dedup_hits[route] += 1

    def delivery_failed(self, reason: str) -> None:
        self.delivery_failures[reason] += 1

    def spool_appended(self, reason: str) -> None:
        self.spooled[reason] += 1

    def producer_rebuilt(self) -> None:
        self.producer_rebuilds += 1

    def observe_publish(self, seconds: float) -> None:
        self.publish_latency.observe(seconds)

    def deadline_used(self, route: str, fraction: float) -> None:
        """An answer to a complete request on ``route`` took ``fraction`` of its
        ``respond_within_s`` (from its head to the answer); above 1 is late."""
        histogram = self.deadline_used_by_route.get(route)
        if histogram is None:
            histogram = self.deadline_used_by_route[route] = Histogram(DEADLINE_USED_BUCKETS)
        histogram.observe(fraction)

    def gauge(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Expose ``gauge`` with the value ``read()`` returns at render time."""
        self.gauges[gauge] = read

    def render(self) -> bytes:
        lines: list[str] = []
        _gauge(lines, Gauge.BUILD_INFO, [(f'version="{__version__}"', 1)])
        _family(
            lines,
            "hookd_requests_total",
            "counter",
            "Requests answered, by route and code.",
            [
                (f'route="{_escape(route)}",code="{code}"', n)
                for (route, code), n in sorted(self.requests.items())
            ],
        )
        _family(
            lines,
            "hookd_verify_failures_total",
            "counter",
            "Requests refused by verification, by route and reason.",
            [
                (f'route="{_escape(route)}",reason="{_escape(reason)}"', n)
                for (route, reason), n in sorted(self.verify_failures.items())
            ],
        )
        _family(
            lines,
            "hookd_delivery_failures_total",
            "counter",
            "Records Kafka did not acknowledge, by reason.",
            [
                (f'reason="{_escape(reason)}"', n)
                for reason, n in sorted(self.delivery_failures.items())
            ],
        )
        _family(
            lines,
            "hookd_client_refusals_total",
            "counter",
            "Requests refused for their client's address (reason allow_from: 403), and "
            "connections refused for their PROXY protocol header (route -), by reason.",
            [
                (f'route="{_escape(route)}",reason="{_escape(reason)}"', n)
                for (route, reason), n in sorted(self.client_refusals.items())
            ],
        )
        _family(
            lines,
            "hookd_rejects_dropped_total",
            "counter",
            "Refused requests not written to [kafka] rejects_topic because of its per-route "
            "rate limit.",
            [(f'route="{_escape(route)}"', n) for route, n in sorted(self.rejects_dropped.items())],
        )
        _family(
            lines,
            "hookd_dedup_hits_total",
            "counter",
            "Redeliveries of an already published id, answered 2xx and not published.",
            [(f'route="{_escape(route)}"', n) for route, n in sorted(self.dedup_hits.items())],
        )
        _family(
            lines,
            "hookd_producer_rebuilds_total",
            "counter",
            "Kafka producers replaced because they stopped delivering (fenced, fatal error, "
            "deliveries failing while the broker answers).",
            [("", self.producer_rebuilds)],
        )
        _family(
            lines,
            "hookd_spooled_total",
            "counter",
            'Records committed to the spool: reason "ack" (ack = "spool") or "fallback" '
            "(Kafka could not ack).",
            [(f'reason="{reason}"', n) for reason, n in sorted(self.spooled.items())],
        )
        _histograms(
            lines,
            "hookd_publish_latency_seconds",
            "From hand-over to the broker's ack.",
            [("", self.publish_latency)],
        )
        _histograms(
            lines,
            "hookd_answer_deadline_used_ratio",
            "Answer time, from the request head to the answer, as a fraction of the route's "
            "respond_within_s; above 1 is late.",
            [
                (f'route="{_escape(route)}"', histogram)
                for route, histogram in sorted(self.deadline_used_by_route.items())
            ],
        )
        _gauge(
            lines,
            Gauge.LAST_ACCEPTED,
            [(f'route="{_escape(route)}"', t) for route, t in sorted(self.last_accepted.items())],
        )
        _gauge(
            lines,
            Gauge.LAST_REJECTED,
            [(f'route="{_escape(route)}"', t) for route, t in sorted(self.last_rejected.items())],
        )
        _gauge(
            lines,
            Gauge.ROUTE_SILENT,
            [(f'route="{_escape(route)}"', silent) for route, silent in self.silent()],
        )
        for gauge, read in sorted(self.gauges.items(), key=lambda item: item[0].metric):
            _gauge(lines, gauge, [("", read())])
        return ("\n".join(lines) + "\n").encode()


def render_gauge(gauge: Gauge, value: float) -> bytes:
    """One unlabelled gauge in the text format, for a process without ``Metrics``."""
    lines: list[str] = []
    _gauge(lines, gauge, [("", value)])
    return ("\n".join(lines) + "\n").encode()


def _gauge(lines: list[str], gauge: Gauge, samples: Iterable[tuple[str, float]]) -> None:
    _family(lines, gauge.metric, "gauge", gauge.help_text, samples)


def _family(
    lines: list[str], name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]
) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")


def _histograms(
    lines: list[str], name: str, help_text: str, series: Iterable[tuple[str, Histogram]]
) -> None:
    """One histogram family: cumulative buckets, sum and count for each labelled series."""
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} histogram")
    for labels, hist in series:
        prefix = labels + "," if labels else ""
        cumulative = 0
        for bound, n in zip((*hist.buckets, float("inf")), hist.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{name}_bucket{{{prefix}le="{le}"}} {cumulative}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {hist.sum}")
        lines.append(f"{name}_count{suffix} {hist.count}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: A family's merge rule by its name; a family not in it (counter, histogram) adds up.
_MERGE = {gauge.metric: gauge.merge for gauge in Gauge}


def merge_expositions(texts: Iterable[bytes]) -> bytes:
    """Several workers' ``render()`` output as one: counters and histograms add up, each gauge
    follows its ``Gauge.merge`` rule."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, dict[str, float]] = {}
    for text in texts:
        family = ""
        for line in text.decode().splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                family = parts[2]
                family_headers = headers.setdefault(family, [])
                if line not in family_headers:
                    family_headers.append(line)
                samples.setdefault(family, {})
                continue
            if not line:
                continue
            key, _, raw = line.rpartition(" ")
            value = float(raw)
            known = samples[family]
            if key not in known:
                known[key] = value
            else:
                known[key] = _MERGE.get(family, Merge.SUM).combine(known[key], value)
    lines: list[str] = []
    for family, family_headers in headers.items():
        lines += family_headers
        lines += [f"{key} {_number(value)}" for key, value in samples[family].items()]
    return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
