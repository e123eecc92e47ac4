"""Per-request CPU cost of hookd's HTTP layer alone: parse, verify, build the record, answer.

The protocol is driven in-process through a minimal transport, and the outbox acknowledges at
once, so what is measured is hookd's own Python work per request, without the broker, the
kernel's sockets or a load generator sharing the CPU. Run it before and after a change to the
hot path:

    .venv/bin/python bench/protocol_bench.py [--requests 20000] [--repeat 5]

``--read-bytes N`` hands each request over in reads of at most N bytes, as a socket delivers a
large body (``--size 262144 --read-bytes 65536``: what copying a large body costs).

With ``--outbox real`` the requests go through the real outbox and publisher instead, over a
producer that acknowledges on its next poll (no librdkafka, no broker), from ``--connections``
connections at once as a load generator keeps them busy: hookd's Python work per request
including the deadline timer, the batching task and the delivery reports. ``--ack spool``
answers from a real spool (in a temporary directory: its writes and fdatasyncs count) and
forwards through the same producer; the clock stops once the spool is empty again, so the
forwarding is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import uvloop

from hookd.config import Config, validate
from hookd.http.protocol import HttpProtocol, ServerContext
from hookd.metrics import Metrics
from hookd.publish.ack import AckMode
from hookd.publish.outbox import Outbox
from hookd.publish.publisher import Publisher
from hookd.publish.spool import Spool
from hookd.record import Record
from hookd.routing import build_routes

SECRET = b"bench-secret"


class Transport:
    """What the protocol needs of an asyncio transport; writes are counted, not kept."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None


class InstantOutbox:
    """Acknowledges every record at once, so only the HTTP path is measured."""

    def __init__(self) -> None:
        self.records = 0

    def commit(
        self, record: Record, mode: AckMode, answer_by: float | None = None
    ) -> asyncio.Future[None]:
        self.records += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


#: How long the stand-in broker takes to acknowledge (librdkafka's linger.ms, 2 ms in hookd's
#: defaults, plus a local round trip).
ACK_LATENCY_S = 0.003


class AckingProducer:
    """Acknowledges a record on the first poll ``ACK_LATENCY_S`` after it was produced."""

    def __init__(self) -> None:
        self.held: deque[tuple[float, Callable[..., None]]] = deque()

    def produce(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        self.held.append((time.monotonic() + ACK_LATENCY_S, kwargs["on_delivery"]))

    def poll(self, timeout: float = 0) -> int:
        held, now, acked = self.held, time.monotonic(), 0
        while held and held[0][0] <= now:
            held.popleft()[1](None, None)
            acked += 1
        return acked

    def purge(self) -> None:
        self.held.clear()

    def __len__(self) -> int:
        return len(self.held)


class AckingCluster:
    """A cluster that is always up and has every topic."""

    def connect(self, timeout_s: float) -> None:
        pass

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        return {name: name for name in names}

    def topics(self, timeout_s: float) -> set[str]:
        return {"bench"}

    def producer(self, on_error: Callable[..., None]) -> AckingProducer:
        return AckingProducer()


def segment_request(body: bytes) -> bytes:
    signature = hmac.new(SECRET, body, hashlib.sha1).hexdigest()
    return (
        b"POST /segment HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n"
        b"Content-Type: application/json\r\nX-Signature: " + signature.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def body_of(size: int) -> bytes:
    event = {
        "type": "track",
        "event": "Order Completed",
        "userId": "user-12345",
        "properties": {"orderId": "ord-98765", "total": 129.99},
        "pad": "",
    }
    raw = json.dumps(event).encode()
    event["pad"] = "x" * max(size - len(raw), 0)
    return json.dumps(event).encode()


def bench_config(ack: str = "kafka", spool_dir: str | None = None) -> Config:
    raw: dict[str, Any] = {
        "routes": [
            {
                "path": "/segment",
                "topic": "bench",
                "verify": "segment",
                "secrets": [SECRET.decode()],
                "ack": ack,
            }
        ]
    }
    if spool_dir is not None:
        raw["spool"] = {"path": spool_dir}
    return validate(raw, {})


def reads_of(raw: bytes, read_bytes: int) -> list[bytes]:
    """The request as a socket would deliver it, in reads of at most ``read_bytes``."""
    if not read_bytes:
        return [raw]
    return [raw[at : at + read_bytes] for at in range(0, len(raw), read_bytes)]


async def run(requests: int, size: int, read_bytes: int = 0) -> float:
    config = bench_config()
    outbox = InstantOutbox()
    context = ServerContext(config.server, build_routes(config), outbox, Metrics())  # type: ignore[arg-type]
    protocol = HttpProtocol(context)
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    reads = reads_of(segment_request(body_of(size)), read_bytes)
    started = time.process_time()
    for _ in range(requests):
        for data in reads:
            protocol.data_received(data)
        await asyncio.sleep(0)  # let the commit callback answer, as the loop would
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    assert outbox.records == requests and not transport.closed, "requests were refused"
    return elapsed / requests * 1e6


async def run_real_outbox(requests: int, size: int, connections: int, ack: str) -> float:
    """Like ``run``, through the real outbox and publisher; each connection sends its next
    request as soon as its answer is written, as a keep-alive load generator does."""
    if ack != "spool":
        return await _real_outbox(requests, size, connections, ack, None)
    with tempfile.TemporaryDirectory(prefix="protocol-bench-") as spool_dir:
        return await _real_outbox(requests, size, connections, ack, spool_dir)


async def _real_outbox(
    requests: int, size: int, connections: int, ack: str, spool_dir: str | None
) -> float:
    config = bench_config(ack, spool_dir)
    metrics = Metrics()
    publisher = Publisher(
        AckingCluster(),  # type: ignore[arg-type]
        metrics,
        ack_timeout_s=config.kafka.ack_timeout_s,
        topics={"bench"},
        topic_names={"bench": "bench"},
        connected=True,
    )
    spool = None
    if config.spool is not None:
        spool = await Spool.open(config.spool.path, config.spool.max_bytes)
    outbox = Outbox(publisher, spool, metrics)
    outbox.start()
    context = ServerContext(config.server, build_routes(config), outbox, metrics)
    raw = segment_request(body_of(size))
    answered = 0
    done = asyncio.get_running_loop().create_future()

    class Client(Transport):
        """Sends the next request once the answer to the last one is written."""

        def write(self, data: bytes) -> None:
            nonlocal answered
            super().write(data)
            answered += 1
            if answered >= requests:
                if not done.done():
                    done.set_result(None)
            else:
                asyncio.get_running_loop().call_soon(protocol_of[self].data_received, raw)

    protocol_of: dict[Client, HttpProtocol] = {}
    for _ in range(connections):
        client = Client()
        protocol_of[client] = HttpProtocol(context)
        protocol_of[client].connection_made(client)  # type: ignore[arg-type]
    started = time.process_time()
    for protocol in protocol_of.values():
        protocol.data_received(raw)
    await done
    while spool is not None and spool.depth:  # what was spooled is forwarded before the clock stops
        await asyncio.sleep(0.001)
    elapsed = time.process_time() - started
    await outbox.close(1.0)
    assert all(not client.closed for client in protocol_of), "requests were refused"
    return elapsed / answered * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=700, help="body bytes")
    parser.add_argument(
        "--read-bytes", type=int, default=0, help="largest read (default: the whole request)"
    )
    parser.add_argument("--outbox", choices=("instant", "real"), default="instant")
    parser.add_argument("--connections", type=int, default=100, help="with --outbox real")
    parser.add_argument(
        "--ack", choices=("kafka", "spool"), default="kafka", help="with --outbox real"
    )
    args = parser.parse_args()
    if args.outbox == "real":
        samples = [
            uvloop.run(run_real_outbox(args.requests, args.size, args.connections, args.ack))
            for _ in range(args.repeat)
        ]
    else:
        samples = [
            uvloop.run(run(args.requests, args.size, args.read_bytes)) for _ in range(args.repeat)
        ]
    print(
        f"HTTP path ({args.outbox} outbox"
        + (f", ack={args.ack}" if args.outbox == "real" else "")
        + f"), {args.size}-byte signed body: "
        f"median {statistics.median(samples):.1f} µs "
        f"per request (samples {', '.join(f'{s:.1f}' for s in samples)})"
    )


if __name__ == "__main__":
    main()
