"""Settings shared by the peers: where to listen, which broker, topic and secret.

Every setting comes from argv first and the environment second, so ``bench/run.py`` can pass
them on the command line while a person trying a peer by hand can export them once.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerSettings:
    host: str
    port: int
    broker: str
    topic: str
    secret: bytes
    path: str
    ack_timeout_s: float


def parse_settings(description: str) -> PeerSettings:
    """Read the peer's settings; argv wins over ``BENCH_*`` environment variables."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=env("BENCH_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("BENCH_PORT", "8080")))
    parser.add_argument("--broker", default=env("BENCH_BROKER", "127.0.0.1:9092"))
    parser.add_argument("--topic", default=env("BENCH_TOPIC", "bench"))
    parser.add_argument("--secret", default=env("BENCH_SECRET"))
    parser.add_argument("--path", default=env("BENCH_PATH", "/segment"))
    parser.add_argument(
        "--ack-timeout-s", type=float, default=float(env("BENCH_ACK_TIMEOUT_S", "8"))
    )
    args = parser.parse_args()
    if not args.secret:
        parser.error("a secret is required: --secret or BENCH_SECRET")
    return PeerSettings(
        host=args.host,
        port=args.port,
        broker=args.broker,
        topic=args.topic,
        secret=args.secret.encode(),
        path=args.path,
        ack_timeout_s=args.ack_timeout_s,
    )
