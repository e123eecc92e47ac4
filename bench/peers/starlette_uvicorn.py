"""The async peer: Starlette on uvicorn, publishing with confluent-kafka directly.

This is the "modern Python" answer to the same job, run the way its users run it: uvicorn as
``pip install "uvicorn[standard]"`` installs it (httptools parses HTTP, uvloop runs the loop),
an async Starlette handler that verifies the Segment signature with ``hmac.compare_digest``, and
``confluent_kafka.Producer`` (``acks=all``, idempotence, ``linger.ms=2``, the settings hookd
uses) whose delivery report resolves an asyncio future, so it answers 200 only after the
broker's ack.

The HTTP implementation and the loop are passed to uvicorn by name (``--http httptools``,
the default, and ``loop="uvloop"``), never ``auto``: without httptools uvicorn's ``auto``
quietly falls back to pure-Python h11, which is what an earlier version of this benchmark
measured by mistake. Here a missing httptools stops the peer at start-up, and every worker
prints one ``bench-peer:`` line naming the parser and loop it really runs, which bench/run.py
records. ``--http h11`` is the labelled extra row (uvicorn without httptools).

Delivery reports fire only inside ``poll()``; a task on the event loop polls without blocking
(``poll(0)``), so the callbacks run on the loop thread and can resolve futures directly. It
sleeps 1 ms when nothing was delivered: that bounds the added latency and costs some idle CPU,
which the benchmark's CPU-per-request figure includes.

``--workers N`` runs N uvicorn worker processes (uvicorn's own ``--workers``: a supervisor
that spawns them, one shared socket); each worker has its own producer.

Run: ``python bench/peers/starlette_uvicorn.py --port 8082 --broker 127.0.0.1:9092
--topic bench --secret s3cret [--http httptools|h11] [--workers N]`` (or the ``BENCH_*``
environment variables, see common.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import importlib.metadata
import os
import sys
import time
from collections.abc import AsyncIterator

import uvicorn
from common import PeerSettings, export_settings, parse_settings
from confluent_kafka import KafkaError, Message, Producer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


class AsyncPublisher:
    """confluent-kafka producer whose delivery reports resolve asyncio futures."""

    def __init__(self, settings: PeerSettings) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": settings.broker,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "message.timeout.ms": int(settings.ack_timeout_s * 1000),
            }
        )
        self._topic = settings.topic
        self._timeout = settings.ack_timeout_s

    async def poll_forever(self) -> None:
        while True:
            delivered = self._producer.poll(0)
            await asyncio.sleep(0 if delivered else 0.001)

    async def publish(self, value: bytes, headers: list[tuple[str, bytes]]) -> bool:
        """Return True once the broker acked the record, False on error or timeout."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if not future.done():
                future.set_result(err is None)

        try:
            self._producer.produce(
                self._topic,
                value=value,
                headers=headers,
                timestamp=int(time.time() * 1000),
                on_delivery=on_delivery,
            )
        except BufferError:
            return False
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            return False

    def close(self) -> None:
        self._producer.flush(5)


def create_app(settings: PeerSettings) -> Starlette:
    publisher = AsyncPublisher(settings)
    secret = settings.secret
    route_name = settings.path.encode()

    async def segment(request: Request) -> PlainTextResponse:
        body = await request.body()
        given = request.headers.get("x-signature", "").encode()
        expected = hmac.new(secret, body, hashlib.sha1).hexdigest().encode()
        if not hmac.compare_digest(given, expected):
            return PlainTextResponse("signature mismatch\n", status_code=401)
        headers = [
            ("route", route_name),
            ("received-at", str(int(time.time() * 1000)).encode()),
            ("source-ip", (request.client.host if request.client else "").encode()),
            ("content-type", request.headers.get("content-type", "").encode()),
        ]
        if not await publisher.publish(body, headers):
            return PlainTextResponse(
                "broker unavailable\n", status_code=503, headers={"Retry-After": "1"}
            )
        return PlainTextResponse("ok\n")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        report_runtime(settings.extra.get("http", "httptools"))
        poller = asyncio.create_task(publisher.poll_forever())
        try:
            yield
        finally:
            poller.cancel()
            publisher.close()

    return Starlette(routes=[Route(settings.path, segment, methods=["POST"])], lifespan=lifespan)


def report_runtime(http: str) -> None:
    """Print what this worker really runs; refuse to serve on a loop other than uvloop."""
    loop = asyncio.get_running_loop()
    loop_name = f"{type(loop).__module__}.{type(loop).__qualname__}"
    if not type(loop).__module__.startswith("uvloop"):
        raise RuntimeError(f"bench-peer: expected a uvloop loop, running {loop_name}")
    parser = "h11 " + importlib.metadata.version("h11")
    if http == "httptools":
        import httptools

        parser = f"httptools {httptools.__version__}"
    print(
        f"bench-peer: uvicorn {uvicorn.__version__} http={http} ({parser}) loop=uvloop "
        f"({loop_name} {importlib.metadata.version('uvloop')}) pid={os.getpid()}",
        flush=True,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http",
        choices=("httptools", "h11"),
        default=os.environ.get("BENCH_UVICORN_HTTP", "httptools"),
        help="uvicorn's HTTP implementation, by name (never 'auto')",
    )


def settings_from_env() -> PeerSettings:
    """The settings again, in a uvicorn worker process (spawned: it only has the env)."""
    return parse_settings(__doc__.splitlines()[0], add_arguments, argv=[])


def app_from_env() -> Starlette:
    """uvicorn's app factory for ``--workers N`` (it needs an import string, not an app)."""
    return create_app(settings_from_env())


def main() -> None:
    settings = parse_settings(__doc__.splitlines()[0], add_arguments)
    http = settings.extra["http"]
    if http == "httptools":
        try:
            import httptools  # noqa: F401
        except ImportError:
            sys.exit(
                "bench-peer: --http httptools, but httptools is not installed; "
                "install the peer as its users do: pip install 'uvicorn[standard]'"
            )
    options = {
        "host": settings.host,
        "port": settings.port,
        "http": http,  # by name: a missing parser fails here instead of falling back
        "loop": "uvloop",
        "log_level": "warning",
        "access_log": False,
    }
    if settings.workers > 1:
        export_settings(settings)
        os.environ["BENCH_UVICORN_HTTP"] = http
        uvicorn.run(
            "starlette_uvicorn:app_from_env", factory=True, workers=settings.workers, **options
        )
    else:
        uvicorn.run(create_app(settings), **options)


if __name__ == "__main__":
    main()
