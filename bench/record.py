"""The typed result of one (scenario, server) run, and its form in results.json.

One record travels from the run (``run.py``) to the console line and the report
(``report.py``) and back from a stored results.json (``--rerun-contended``), so its fields are
declared here once; ``to_json`` writes the same keys, in the same order, that results.json has
always had, and ``from_json`` reads older files too (keys added later get their defaults).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from procstats import Memory
from servers import Layout, Scenario, ServerSpec


@dataclass
class Round:
    """One wrk invocation and the CPU spent around it."""

    requests: int
    duration_s: float
    rps: float
    non_2xx: int
    socket_errors: int
    latency_ms: dict[str, float]
    server_cpu_s: float
    wrk_cpu_s: float
    broker_cpu_s: float
    cpu_us_per_req: float
    server_cpu_pct: float
    load_cpu_pct: float
    foreign_server_cpu_pct: float  # others' use of the server's CPU during the round
    foreign_load_cpu_pct: float  # others' use of the load CPU (includes this harness, ~1%)
    steal_pct: float  # hypervisor steal on the server's CPU
    raw: dict[str, Any] = field(repr=False)  # wrk's BENCH_JSON line, kept whole
    #: A server that answers before publishing (hookd ack=spool): seconds after wrk ended until
    #: its spool was empty, and its CPU in them (in ``server_cpu_s`` and ``cpu_us_per_req``).
    drain_s: float = 0.0
    drain_cpu_s: float = 0.0

    @property
    def ok_responses(self) -> int:
        return self.requests - self.non_2xx

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("raw")
        data["wrk"] = self.raw
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Round:
        fields = {k: v for k, v in data.items() if k != "wrk"}
        return cls(**fields, raw=data["wrk"])


@dataclass(frozen=True, slots=True)
class Startup:
    """Seconds from spawn to the first TCP accept, and to the first signed POST answered 2xx."""

    port_s: float
    ready_s: float


@dataclass(frozen=True, slots=True)
class RecordsCheck:
    """The topic read back: it must hold at least as many records as answers were 2xx."""

    answered_2xx: int
    consumed: int
    ok: bool
    checked: bool = True  # False: the server publishes nothing (the ceiling)


@dataclass(frozen=True, slots=True)
class Median:
    """Medians over the measured rounds: the figures every table shows."""

    rps: float
    cpu_us_per_req: float
    server_cpu_pct: float
    load_cpu_pct: float
    foreign_server_cpu_pct: float
    foreign_load_cpu_pct: float
    steal_pct: float
    p50_ms: float
    p99_ms: float


@dataclass
class Measurement:
    """What a run that got as far as measuring found; absent when it was skipped or failed."""

    layout: Layout
    hookd_sources: str  # digest of hookd/**/*.py when the run started
    command: str
    startup: Startup
    memory_after: Memory
    broker_memory_after: Memory
    reported: list[str]  # the server's own start-up lines (the peers' "bench-peer:")
    records: RecordsCheck
    warmup: Round
    rounds: list[Round]
    discarded_rounds: list[Round]
    median: Median
    non_2xx: int
    socket_errors: int


#: The keys that name a run in results.json, measured or not.
IDENTITY = ("server", "label", "family", "scenario", "size", "connection", "workers", "scaling")


@dataclass
class RunResult:
    """One (scenario, server) run: who and what, its status, and its measurement if any."""

    server: str
    label: str
    family: str  # "hookd" | "peer" | "ceiling"
    scenario: str
    size: str
    connection: str
    workers: int
    scaling: int
    status: str  # "ok" | "skipped" | "failed"
    reason: str = ""  # why it was not measured
    flags: list[str] = field(default_factory=list)  # problems: errors, lost records, ...
    notes: list[str] = field(default_factory=list)  # worth knowing, not a problem
    measured: Measurement | None = None
    rerun_at: str | None = None  # when --rerun-contended replaced this row

    @classmethod
    def named(
        cls, server: ServerSpec, scenario: Scenario, status: str, reason: str = ""
    ) -> RunResult:
        """A result for ``server`` in ``scenario``, to be measured or saying why not."""
        return cls(
            server.name,
            server.label,
            server.family,
            scenario.name,
            scenario.size_name,
            scenario.connection,
            scenario.workers,
            scenario.scaling,
            status,
            reason,
        )

    @property
    def ok(self) -> Measurement | None:
        """The measurement of a successful run, else None."""
        return self.measured if self.status == "ok" else None

    @property
    def is_main(self) -> bool:
        """A row of the main table (one process, one core), not of the --workers scenario."""
        return not self.scaling

    def load_starved(self, max_foreign_cpu: float) -> bool:
        """Others took the load CPU while the server had CPU to spare: wrk was starved.

        The server's CPU per request is then not its saturated figure (fewer requests per loop
        iteration), and its req/s says more about the neighbours than about the server. Not
        applied to the ceiling: wrk is its limit by design, and at tens of thousands of
        requests/s the loopback's softirq time on the load CPU (no process's) reads as "others".
        """
        m = self.ok
        return (
            m is not None
            and self.family != "ceiling"
            and m.median.foreign_load_cpu_pct > max_foreign_cpu
            and m.median.server_cpu_pct < 90
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {key: getattr(self, key) for key in IDENTITY}
        data["status"] = self.status
        m = self.measured
        if m is None:
            data |= {"reason": self.reason, "flags": self.flags}
        else:
            data |= {
                "layout": asdict(m.layout),
                "hookd_sources": m.hookd_sources,
                "flags": self.flags,
                "notes": self.notes,
                "command": m.command,
                "startup": asdict(m.startup),
                "memory_after": asdict(m.memory_after),
                "broker_memory_after": asdict(m.broker_memory_after),
                "reported": m.reported,
                "records": asdict(m.records),
                "warmup": m.warmup.to_json(),
                "rounds": [r.to_json() for r in m.rounds],
                "discarded_rounds": [r.to_json() for r in m.discarded_rounds],
                "median": asdict(m.median),
                "non_2xx": m.non_2xx,
                "socket_errors": m.socket_errors,
            }
        if self.rerun_at is not None:
            data["rerun_at"] = self.rerun_at
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        measured = None
        if data["status"] == "ok":
            layout = data["layout"]
            measured = Measurement(
                layout=Layout(
                    tuple(layout["server"]),
                    tuple(layout["load"]),
                    tuple(layout["broker"]),
                    layout["wrk_threads"],
                    layout["wrk_connections"],
                ),
                hookd_sources=data.get("hookd_sources", ""),
                command=data["command"],
                startup=Startup(**data["startup"]),
                memory_after=Memory(**data["memory_after"]),
                broker_memory_after=Memory(**data["broker_memory_after"]),
                reported=data.get("reported", []),
                records=RecordsCheck(**data["records"]),
                warmup=Round.from_json(data["warmup"]),
                rounds=[Round.from_json(r) for r in data["rounds"]],
                discarded_rounds=[Round.from_json(r) for r in data["discarded_rounds"]],
                median=Median(**data["median"]),
                non_2xx=data["non_2xx"],
                socket_errors=data["socket_errors"],
            )
        return cls(
            server=data["server"],
            label=data["label"],
            family=data["family"],
            scenario=data["scenario"],
            size=data["size"],
            connection=data["connection"],
            workers=data.get("workers", 1),
            scaling=data.get("scaling", 0),
            status=data["status"],
            reason=data.get("reason", ""),
            flags=data.get("flags", []),
            notes=data.get("notes", []),
            measured=measured,
            rerun_at=data.get("rerun_at"),
        )
