"""Settings shared by the peers: where to listen, which broker, topic and secret.

Every setting comes from argv first and the environment second, so ``bench/run.py`` can pass
them on the command line while a person trying a peer by hand can export them once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PeerSettings:
    host: str
    port: int
    broker: str
    topic: str
    secret: bytes
    path: str
    ack_timeout_s: float
    workers: int = 1
    #: the peer's own options (``add_arguments``), by dest name
    extra: dict[str, Any] = field(default_factory=dict)


#: The options every peer takes; the rest of the parsed arguments go to ``PeerSettings.extra``.
COMMON = frozenset(
    ("host", "port", "broker", "topic", "secret", "path", "ack_timeout_s", "workers")
)


def parse_settings(
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> PeerSettings:
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
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env("BENCH_WORKERS", "1")),
        help="server processes (peers that support it)",
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("a secret is required: --secret or BENCH_SECRET")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return PeerSettings(
        host=args.host,
        port=args.port,
        broker=args.broker,
        topic=args.topic,
        secret=args.secret.encode(),
        path=args.path,
        ack_timeout_s=args.ack_timeout_s,
        workers=args.workers,
        extra={k: v for k, v in vars(args).items() if k not in COMMON},
    )


def export_settings(settings: PeerSettings) -> None:
    """Put the settings in ``BENCH_*`` variables, for worker processes that start afresh."""
    os.environ.update(
        BENCH_HOST=settings.host,
        BENCH_PORT=str(settings.port),
        BENCH_BROKER=settings.broker,
        BENCH_TOPIC=settings.topic,
        BENCH_SECRET=settings.secret.decode(),
        BENCH_PATH=settings.path,
        BENCH_ACK_TIMEOUT_S=str(settings.ack_timeout_s),
        BENCH_WORKERS=str(settings.workers),
    )
