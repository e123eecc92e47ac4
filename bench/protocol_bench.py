"""Per-request CPU cost of hookd's HTTP layer alone: parse, verify, build the record, answer.

The protocol is driven in-process through a minimal transport, and the outbox acknowledges at
once, so what is measured is hookd's own Python work per request, without the broker, the
kernel's sockets or a load generator sharing the CPU. Run it before and after a change to the
hot path:

    .venv/bin/python bench/protocol_bench.py [--requests 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import statistics
import time

import uvloop

from hookd.config import validate
from hookd.http.protocol import HttpProtocol, ServerContext
from hookd.metrics import Metrics
from hookd.publish.ack import AckMode
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


async def run(requests: int, size: int) -> float:
    config = validate(
        {
            "routes": [
                {
                    "path": "/segment",
                    "topic": "bench",
                    "verify": "segment",
                    "secrets": [SECRET.decode()],
                }
            ]
        },
        {},
    )
    outbox = InstantOutbox()
    context = ServerContext(config.server, build_routes(config), outbox, Metrics())  # type: ignore[arg-type]
    protocol = HttpProtocol(context)
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    raw = segment_request(body_of(size))
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(raw)
        await asyncio.sleep(0)  # let the commit callback answer, as the loop would
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    assert outbox.records == requests and not transport.closed, "requests were refused"
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=700, help="body bytes")
    args = parser.parse_args()
    samples = [uvloop.run(run(args.requests, args.size)) for _ in range(args.repeat)]
    print(
        f"HTTP path, {args.size}-byte signed body: median {statistics.median(samples):.1f} µs "
        f"per request (samples {', '.join(f'{s:.1f}' for s in samples)})"
    )


if __name__ == "__main__":
    main()
