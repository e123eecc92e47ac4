"""The async peer: Starlette on uvicorn, publishing with confluent-kafka directly.

This is the "modern Python" answer to the same job: an async Starlette handler verifies the
Segment signature with ``hmac.compare_digest``, produces with ``confluent_kafka.Producer``
(``acks=all``, idempotence, ``linger.ms=2``, the settings hookd uses) and awaits an asyncio
future that the delivery report resolves, so it answers 200 only after the broker's ack.

Delivery reports fire only inside ``poll()``; a task on the event loop polls without blocking
(``poll(0)``), so the callbacks run on the loop thread and can resolve futures directly. It
sleeps 1 ms when nothing was delivered: that bounds the added latency and costs some idle CPU,
which the benchmark's CPU-per-request figure includes.

uvicorn picks httptools when installed and h11 otherwise; bench/run.py records which one.

Run: ``python bench/peers/starlette_uvicorn.py --port 8082 --broker 127.0.0.1:9092
--topic bench --secret s3cret`` (or the ``BENCH_*`` environment variables, see common.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator

import uvicorn
from common import PeerSettings, parse_settings
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
        poller = asyncio.create_task(publisher.poll_forever())
        try:
            yield
        finally:
            poller.cancel()
            publisher.close()

    return Starlette(routes=[Route(settings.path, segment, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    settings = parse_settings(__doc__.splitlines()[0])
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="auto",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
