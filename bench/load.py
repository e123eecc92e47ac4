"""The load: signed Segment bodies, one wrk round with the CPU measured around it, probes.

Every server gets the same bodies and the same wrk command, so that their figures compare;
the CPU each side spent is read around the round (``procstats``), not estimated.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import hmac
import http.client
import json
import random
import resource
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from embedded_broker import cpu_list
from procstats import cpu_busy_pct, cpu_jiffies, cpu_seconds
from record import Round
from servers import BENCH, ROUTE, Layout, Scenario

LUA_SCRIPT = BENCH / "post.lua"


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
        "taskset", "-c", cpu_list(layout.load),
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


#: How long a spool may take to forward what one round put in it.
DRAIN_TIMEOUT_S = 300.0


def spool_depth(admin_port: int) -> int:
    """Records the server's spool holds (``hookd_spool_depth`` on its admin listener)."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    depths = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hookd_spool_depth")
    ]
    if not depths:
        raise RuntimeError("the server's /metrics has no hookd_spool_depth")
    return int(sum(depths))


def drain(round_: Round, admin_port: int, server_pid: int) -> Round:
    """Wait until the spool has forwarded what the round put in it; the round's CPU then
    includes that forwarding, which answering from the spool only deferred."""
    cpu0, started = cpu_seconds(server_pid), time.monotonic()
    while spool_depth(admin_port):
        if time.monotonic() - started > DRAIN_TIMEOUT_S:
            raise RuntimeError(f"the spool did not drain within {DRAIN_TIMEOUT_S:g}s")
        time.sleep(0.1)
    drain_cpu = cpu_seconds(server_pid) - cpu0
    server_cpu = round_.server_cpu_s + drain_cpu
    return dataclasses.replace(
        round_,
        server_cpu_s=server_cpu,
        cpu_us_per_req=server_cpu * 1e6 / round_.requests if round_.requests else float("nan"),
        drain_s=time.monotonic() - started,
        drain_cpu_s=drain_cpu,
    )
