"""In-process counters rendered in the Prometheus text format.

Plain dicts and ints: an increment on the request path is a dict update, nothing more.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable, Iterable

from hookd import __version__

#: Publish latency buckets (seconds): from a same-host broker's ~1 ms to the ack timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Answer time as a fraction of the route's respond_within_s: coarse where answers are quick,
#: fine approaching 1 (the deadline), and two buckets past it for late answers.
DEADLINE_USED_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.5, 2.0)
#: The route label of a request no route took (unknown path, refused before routing).
NO_ROUTE = "-"


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
    """Everything hookd counts. Gauges are read at render time from the callables given.

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
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
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

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help_text, read)

    def render(self) -> bytes:
        lines: list[str] = []
        _family(
            lines,
            "hookd_build_info",
            "gauge",
            "hookd version.",
            [
                (f'version="{__version__}"', 1),
            ],
        )
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
        _family(
            lines,
            "hookd_last_accepted_timestamp_seconds",
            "gauge",
            "Unix time of the route's last request answered 2xx (redeliveries and handshakes "
            "included); absent until the first.",
            [(f'route="{_escape(route)}"', t) for route, t in sorted(self.last_accepted.items())],
        )
        _family(
            lines,
            "hookd_last_rejected_timestamp_seconds",
            "gauge",
            "Unix time of the route's last request answered 4xx; absent until the first.",
            [(f'route="{_escape(route)}"', t) for route, t in sorted(self.last_rejected.items())],
        )
        _family(
            lines,
            "hookd_route_silent",
            "gauge",
            "1 when a route with expect_every_s accepted nothing for longer than that (counted "
            "from the process start before its first request), else 0.",
            [(f'route="{_escape(route)}"', silent) for route, silent in self.silent()],
        )
        for name, (help_text, read) in sorted(self.gauges.items()):
            _family(lines, name, "gauge", help_text, [("", read())])
        return ("\n".join(lines) + "\n").encode()


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


#: Families whose samples are not added up across workers.
_MERGE_MAX = frozenset(
    {
        "hookd_build_info",
        "hookd_spool_oldest_age_seconds",
        "hookd_last_accepted_timestamp_seconds",
        "hookd_last_rejected_timestamp_seconds",
    }
)
_MERGE_MIN = frozenset({"hookd_broker_up", "hookd_route_silent"})


def merge_expositions(texts: Iterable[bytes]) -> bytes:
    """Several workers' ``render()`` output as one: counters, histograms and most gauges add
    up; ``hookd_broker_up`` is the minimum (down if any worker cannot reach the broker), and so
    is ``hookd_route_silent`` (a route is silent only when every worker is: the kernel spreads
    a sender's connections over them, so one worker's silence says nothing). Build info, the
    oldest spooled record's age and the last accepted / rejected times are the maximum (the
    latest of any worker)."""
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
            elif family in _MERGE_MAX:
                known[key] = max(known[key], value)
            elif family in _MERGE_MIN:
                known[key] = min(known[key], value)
            else:
                known[key] += value
    lines: list[str] = []
    for family, family_headers in headers.items():
        lines += family_headers
        lines += [f"{key} {_number(value)}" for key, value in samples[family].items()]
    return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
