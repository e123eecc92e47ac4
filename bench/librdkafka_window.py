"""librdkafka's own CPU per record, by how much it holds unacknowledged (it busy-polls while
it holds several batches; README, Performance, says what bounding it did in the whole server).

A confluent-kafka producer with hookd's settings (``acks=all``, idempotence, ``linger.ms=2``)
produces to the embedded broker, keeping ``W`` records outstanding ("window": one more as each
ack comes back) or handing over ``W`` at once and waiting for all ("burst", what the spool's
forwarder did). Printed: records per second, and the CPU of librdkafka's threads and of the
producing thread per record, read from ``/proc/self/task``. This process runs on CPU 0 and the
broker on CPU 1:

    .venv/bin/python bench/librdkafka_window.py [--size 16384] [--plan window:50,window:200]

The broker keeps every record in memory: the run sends at most 512 MB in all.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a plain script (as bench/run.py is): add scripts/, where the broker harness lives.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import argparse
import os
import time

import embedded_broker
from confluent_kafka import Producer

TOTAL_BYTES = 512 * 1024 * 1024


def thread_cpu() -> dict[str, float]:
    """CPU seconds by thread name, for this process's threads."""
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        out[name] = out.get(name, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    return out


def measure(producer: Producer, mode: str, outstanding: int, size: int, count: int) -> str:
    value = b"x" * size
    acked = 0

    def delivered(error: object, message: object) -> None:
        nonlocal acked
        acked += 1

    before, started = thread_cpu(), time.monotonic()
    sent = 0
    while sent < count or acked < sent:
        if mode == "burst" and acked == sent:
            for _ in range(min(outstanding, count - sent)):
                producer.produce("bench", value, on_delivery=delivered)
                sent += 1
        while mode == "window" and sent < count and sent - acked < outstanding:
            producer.produce("bench", value, on_delivery=delivered)
            sent += 1
        producer.poll(0.001)
    after, elapsed = thread_cpu(), time.monotonic() - started
    spent = {name: (after[name] - before.get(name, 0.0)) * 1e6 / count for name in after}
    librdkafka = sum(us for name, us in spent.items() if name.startswith("rdk:"))
    return (
        f"{mode} {outstanding:4d} x {size:,} B: {count / elapsed:8,.0f} records/s  "
        f"librdkafka {librdkafka:7.1f} µs/record  producing thread "
        f"{spent.get('python', 0.0):6.1f} µs/record"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="record bytes")
    parser.add_argument("--plan", default="window:50,window:200,burst:500,window:50,window:200")
    args = parser.parse_args()
    plan = [(mode, int(n)) for mode, n in (step.split(":") for step in args.plan.split(","))]
    count = min(20_000, TOTAL_BYTES // len(plan) // args.size)
    os.sched_setaffinity(0, {0})
    with embedded_broker.running(cpus=(1,)) as broker:
        embedded_broker.create_topic(broker.address, "bench")
        producer = Producer(
            {
                "bootstrap.servers": broker.address,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
            }
        )
        for mode, outstanding in plan:
            print(measure(producer, mode, outstanding, args.size, count), flush=True)
        producer.flush(10)


if __name__ == "__main__":
    main()
