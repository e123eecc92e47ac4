"""Wiring: the loop, the listeners, the publisher, signals and the graceful drain."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import time
from pathlib import Path

import uvloop
from confluent_kafka import KafkaException
from quixstreams import Application
from quixstreams.models.topics.admin import TopicAdmin

from hookd.admin import AdminProtocol
from hookd.config import Config, HostPort
from hookd.http.protocol import HttpProtocol, ServerContext, enforce_timeouts
from hookd.metrics import Metrics
from hookd.publish.outbox import Outbox
from hookd.publish.publisher import Publisher
from hookd.publish.spool import Spool, SpoolError
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
    """One serving process: public listener, admin listener, outbox (publisher and spool)."""

    def __init__(
        self, config: Config, routes: RouteTable, outbox: Outbox, metrics: Metrics
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.outbox = outbox
        self.publisher = outbox.publisher
        self.context = ServerContext(config.server, routes, outbox, metrics)
        self._stopping = asyncio.Event()
        self._servers: list[asyncio.Server] = []
        self._register_gauges()

    @classmethod
    async def open(cls, config: Config, routes: RouteTable, app: Application) -> Hookd:
        metrics = Metrics()
        publisher = Publisher(app.config.broker_address, producer_config(config), metrics)
        spool = None
        if config.spool is not None:
            try:
                spool = await Spool.open(Path(config.spool.path), config.spool.max_bytes)
            except SpoolError as exc:
                raise StartupError(f"cannot open the spool: {exc}") from None
        return cls(config, routes, Outbox(publisher, spool), metrics)

    def _register_gauges(self) -> None:
        gauge, ctx, spool = self.metrics.gauge, self.context, self.outbox.spool
        gauge("hookd_in_flight_requests", "Requests waiting to be durable.", lambda: ctx.in_flight)
        gauge(
            "hookd_in_flight_bytes",
            "Body bytes of requests waiting to be durable.",
            lambda: ctx.in_flight_bytes,
        )
        gauge("hookd_connections", "Open client connections.", lambda: len(ctx.connections))
        gauge(
            "hookd_broker_up",
            "1 when the broker answered recently.",
            lambda: 1 if self.publisher.ready else 0,
        )
        if spool is not None:
            gauge("hookd_spool_depth", "Records in the spool.", lambda: spool.depth)
            gauge("hookd_spool_bytes", "Payload bytes in the spool.", lambda: spool.size_bytes)
            gauge(
                "hookd_spool_oldest_age_seconds",
                "Age of the oldest spooled record (0 when empty).",
                lambda: _age_s(spool.oldest_timestamp_ms),
            )

    def not_ready(self) -> str | None:
        """Why the load balancer should not send traffic here, or ``None``.

        With a spool, a broker outage alone does not make hookd unready: it still answers 2xx
        durably, and taking every replica out of rotation would turn the outage into lost
        webhooks for senders that do not retry.
        """
        if self.context.draining:
            return "draining"
        if self.publisher.ready:
            return None
        spool = self.outbox.spool
        if spool is None:
            return "broker not reachable"
        if spool.size_bytes >= spool.max_bytes:
            return "broker not reachable and spool full"
        return None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        server = self.config.server
        public = listen_socket(server.listen_address)
        admin = listen_socket(server.admin_address)
        self.publisher.start()
        self.outbox.start()
        timeouts = loop.create_task(enforce_timeouts(self.context), name="hookd-timeouts")
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
        timeouts.cancel()

    async def drain(self) -> None:
        """Readiness off, stop accepting, answer everything in flight, hand the spool over."""
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
        left = await self.outbox.close(max(deadline - time.monotonic(), 0.5))
        await asyncio.sleep(0)  # the last commits answer their requests
        for conn in list(ctx.connections):
            conn.shut_down()
        admin.close()
        log.info(
            "drained in %.2fs (%d records not acked in time)", time.monotonic() - started, left
        )


def _age_s(timestamp_ms: int | None) -> float:
    return 0.0 if timestamp_ms is None else max(time.time() - timestamp_ms / 1000, 0.0)


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
        hookd = await Hookd.open(config, routes, app)
        await hookd.run()

    uvloop.run(main())
