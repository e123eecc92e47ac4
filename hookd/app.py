"""Wiring: the loop, the listeners, the publisher, signals and the graceful drain."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import time

import uvloop
from confluent_kafka import KafkaException
from quixstreams import Application
from quixstreams.models.topics.admin import TopicAdmin

from hookd.admin import AdminProtocol
from hookd.config import Config, HostPort
from hookd.http.protocol import HttpProtocol, ServerContext
from hookd.metrics import Metrics
from hookd.publish.publisher import Publisher
from hookd.routing import RouteTable, build_routes

log = logging.getLogger("hookd")


class StartupError(Exception):
    """hookd cannot start; the message says why."""


def producer_config(config: Config) -> dict[str, str | int | float | bool]:
    kafka = config.kafka
    return {
        "linger.ms": kafka.linger_ms,
        **kafka.extra,
        # librdkafka reports a delivery failure at this deadline, so a request never waits
        # longer than ack_timeout_s for its answer.
        "message.timeout.ms": int(kafka.ack_timeout_s * 1000),
        "acks": "all",
        "enable.idempotence": True,
    }


def kafka_application(config: Config) -> Application:
    """Plain ``broker_address``, or Quix Cloud when no address is set and Quix injected its
    token (quixstreams reads ``Quix__Sdk__Token`` / ``Quix__Portal__Api`` itself)."""
    return Application(
        broker_address=config.kafka.broker(os.environ),
        producer_extra_config=producer_config(config),
    )


def resolve_topics(app: Application, routes: RouteTable) -> RouteTable:
    """Create or look up every route's topic; on Quix Cloud the real name carries the
    workspace prefix, so routes produce to ``topic.name``."""
    resolved: dict[str, str] = {}
    for route in routes.routes:
        if route.topic not in resolved:
            topic = app.topic(route.topic, value_serializer="bytes", key_serializer="bytes")
            resolved[route.topic] = topic.name
    return RouteTable(
        tuple(dataclasses.replace(route, topic=resolved[route.topic]) for route in routes.routes)
    )


def listen_socket(address: HostPort) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Hookd:
    """One serving process: public listener, admin listener, publisher."""

    def __init__(self, config: Config, routes: RouteTable, app: Application) -> None:
        self.config = config
        self.metrics = Metrics()
        self.publisher = Publisher(app.config.broker_address, producer_config(config), self.metrics)
        self.context = ServerContext(config.server, routes, self.publisher, self.metrics)
        self._stopping = asyncio.Event()
        self._servers: list[asyncio.Server] = []
        metrics = self.metrics
        metrics.gauge(
            "hookd_in_flight_requests",
            "Requests waiting for their ack.",
            lambda: self.context.in_flight,
        )
        metrics.gauge(
            "hookd_in_flight_bytes",
            "Body bytes of requests waiting for their ack.",
            lambda: self.context.in_flight_bytes,
        )
        metrics.gauge(
            "hookd_connections", "Open client connections.", lambda: len(self.context.connections)
        )
        metrics.gauge(
            "hookd_broker_up",
            "1 when the broker answered recently.",
            lambda: 1 if self.publisher.ready else 0,
        )

    def not_ready(self) -> str | None:
        if self.context.draining:
            return "draining"
        if not self.publisher.ready:
            return "broker not reachable"
        return None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        server = self.config.server
        public = listen_socket(server.listen_address)
        admin = listen_socket(server.admin_address)
        self.publisher.start()
        self._servers = [
            await loop.create_server(lambda: HttpProtocol(self.context), sock=public),
            await loop.create_server(
                lambda: AdminProtocol(self.not_ready, self.metrics.render), sock=admin
            ),
        ]
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        log.info(
            "hookd listening on %s (admin %s), %d routes",
            server.listen,
            server.admin_listen,
            len(self.context.routes.routes),
        )
        await self._stopping.wait()
        await self.drain()

    def stop(self) -> None:
        self._stopping.set()

    async def drain(self) -> None:
        """Readiness off, stop accepting, answer everything in flight, flush, close."""
        started = time.monotonic()
        log.info("draining")
        ctx = self.context
        ctx.draining = True
        public, admin = self._servers
        public.close()
        for conn in list(ctx.connections):
            conn.close_if_idle()
        deadline = started + self.config.kafka.ack_timeout_s + 2
        while any(conn.busy for conn in ctx.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        left = await self.publisher.close(max(deadline - time.monotonic(), 0.5))
        await asyncio.sleep(0)  # the last delivery reports answer their requests
        for conn in list(ctx.connections):
            conn.shut_down()
        admin.close()
        log.info(
            "drained in %.2fs (%d records not acked in time)", time.monotonic() - started, left
        )


def serve(config: Config) -> None:
    """Build everything that can fail before the loop runs, then serve until a signal."""
    routes = build_routes(config)
    app = kafka_application(config)
    connect_timeout = config.kafka.connect_timeout_s
    try:
        TopicAdmin(app.config.broker_address).list_topics(timeout=connect_timeout)
    except KafkaException as exc:
        raise StartupError(
            f"broker not reachable within {connect_timeout:g}s (kafka.connect_timeout_s): "
            f"{exc.args[0].str() if exc.args else exc}"
        ) from None
    try:
        routes = resolve_topics(app, routes)
    except Exception as exc:  # quixstreams raises assorted types for an unreachable broker
        raise StartupError(f"cannot resolve topics on the broker: {exc}") from exc

    async def main() -> None:
        await Hookd(config, routes, app).run()

    uvloop.run(main())
