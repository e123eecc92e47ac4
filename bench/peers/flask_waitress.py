"""The seed's receiver: Flask on waitress, publishing through quixstreams.

It is what a team writes first: a synchronous Flask view that verifies the Segment signature
(``X-Signature`` = hex HMAC-SHA1 of the body) with ``hmac.compare_digest`` and publishes the
body through a quixstreams producer. It answers 200 only after Kafka's delivery report, like
hookd, so the comparison is between equally durable answers.

Waiting on the delivery report: each request thread blocks on a ``threading.Event`` that the
report sets. Reports fire only inside ``poll()``/``flush()``, so a daemon thread polls the
producer. (The other option, ``flush()`` per request, makes every waitress thread wait for
every other thread's messages too; it is measurably slower, and unfair to the peer.)

Run: ``python bench/peers/flask_waitress.py --port 8081 --broker 127.0.0.1:9092
--topic bench --secret s3cret`` (or the ``BENCH_*`` environment variables, see common.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time

from common import PeerSettings, parse_settings
from flask import Flask, Response, request
from quixstreams import Application
from waitress import serve

# waitress' default is 4 threads; each one blocks for a broker round trip, so 4 caps the
# peer well below what its CPU could do. 16 is generous; override with WAITRESS_THREADS.
THREADS = int(os.environ.get("WAITRESS_THREADS", "16"))


class DeliveryWaiter:
    """Produce one record and block the calling thread until Kafka acknowledges it."""

    def __init__(self, settings: PeerSettings) -> None:
        app = Application(
            broker_address=settings.broker,
            producer_extra_config={
                "acks": "all",
                "linger.ms": 2,
                "message.timeout.ms": int(settings.ack_timeout_s * 1000),
            },
        )
        self._producer = app.get_producer()
        self._topic = settings.topic
        self._timeout = settings.ack_timeout_s
        threading.Thread(target=self._poll_forever, name="kafka-poll", daemon=True).start()

    def _poll_forever(self) -> None:
        while True:
            self._producer.poll(0.1)

    def publish(self, value: bytes, headers: list[tuple[str, bytes]]) -> bool:
        """Return True once the broker acked the record, False on error or timeout."""
        done = threading.Event()
        outcome: list[bool] = []

        def on_delivery(err: object, _msg: object) -> None:
            outcome.append(err is None)
            done.set()

        try:
            self._producer.produce(
                self._topic,
                value=value,
                headers=headers,
                timestamp=int(time.time() * 1000),
                buffer_error_max_tries=0,
                on_delivery=on_delivery,
            )
        except BufferError:
            return False
        return done.wait(self._timeout) and outcome[0]


def create_app(settings: PeerSettings) -> Flask:
    app = Flask(__name__)
    waiter = DeliveryWaiter(settings)
    secret = settings.secret

    @app.post(settings.path)
    def segment() -> Response:
        body = request.get_data(cache=False)
        given = request.headers.get("X-Signature", "").encode()
        expected = hmac.new(secret, body, hashlib.sha1).hexdigest().encode()
        if not hmac.compare_digest(given, expected):
            return Response("signature mismatch\n", status=401)
        headers = [
            ("route", settings.path.encode()),
            ("received-at", str(int(time.time() * 1000)).encode()),
            ("source-ip", (request.remote_addr or "").encode()),
            ("content-type", request.headers.get("Content-Type", "").encode()),
        ]
        if not waiter.publish(body, headers):
            return Response("broker unavailable\n", status=503, headers={"Retry-After": "1"})
        return Response("ok\n", status=200)

    return app


def main() -> None:
    settings = parse_settings(__doc__.splitlines()[0])
    if settings.workers != 1:
        raise SystemExit(
            "flask-waitress: one process (waitress threads); --workers is not supported"
        )
    # waitress logs "Task queue depth is N" whenever requests wait for a thread, which under
    # benchmark load is every request: that stderr line would cost the peer CPU, not its work.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        threads=THREADS,
        connection_limit=1000,
        _quiet=True,
    )


if __name__ == "__main__":
    main()
