"""Wiring: the loop, the listeners, the publisher, signals and the graceful drain."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvloop
from confluent_kafka import KafkaException
from quixstreams import Application
from quixstreams.exceptions import QuixException
from quixstreams.kafka import ConnectionConfig
from quixstreams.models.topics.admin import TopicAdmin

from hookd.admin import AdminProtocol
from hookd.config import Config, ConfigError, HostPort, ServerConfig
from hookd.http.protocol import HttpProtocol, ServerContext, enforce_timeouts
from hookd.metrics import Metrics
from hookd.publish.outbox import Outbox
from hookd.publish.publisher import Publisher
from hookd.publish.spool import Spool, SpoolError
from hookd.routing import RouteTable, build_routes

log = logging.getLogger("hookd")

#: A bootstrap address, or Quix Cloud's connection settings.
Broker = str | ConnectionConfig


#: Beyond the ack timeout, how long a request may wait to be durable before a backstop 503.
COMMIT_MARGIN_S = 10.0


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
        loglevel=None,  # its records go through hookd's handler (hookd.logs)
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


def listen_socket(address: HostPort, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening, non-blocking socket. ``reuse_port``: every worker binds the same
    address and the kernel spreads connections across them (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def tls_context(server: ServerConfig) -> ssl.SSLContext | None:
    """The public listener's TLS settings, when ``tls_cert`` and ``tls_key`` are set."""
    if server.tls_cert is None or server.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


class Hookd:
    """One serving process: public listener, admin listener, outbox (publisher and spool)."""

    def __init__(self, prepared: Prepared, outbox: Outbox, metrics: Metrics) -> None:
        self.prepared = prepared
        config = self.config = prepared.config
        routes = prepared.routes
        self.metrics = metrics
        self.outbox = outbox
        self.publisher = outbox.publisher
        self.context = ServerContext(
            config.server,
            routes,
            outbox,
            metrics,
            # librdkafka answers by ack_timeout_s; a spool fallback append adds an fsync
            commit_timeout_s=config.kafka.ack_timeout_s + COMMIT_MARGIN_S,
        )
        self._stopping = asyncio.Event()
        self._reload: asyncio.Future[None] | None = None
        self._servers: list[asyncio.Server] = []
        self._register_gauges()

    @classmethod
    async def open(cls, prepared: Prepared, worker_index: int = 0) -> Hookd:
        config = prepared.config
        metrics = Metrics()
        publisher = Publisher(prepared.broker, producer_config(config), metrics)
        spool = None
        if config.spool is not None:
            try:
                spool = await Spool.open(
                    Path(config.spool.path), config.spool.max_bytes, worker_index
                )
            except SpoolError as exc:
                raise StartupError(f"cannot open the spool: {exc}") from None
        return cls(prepared, Outbox(publisher, spool), metrics)

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

    async def run(self, *, reuse_port: bool = False, admin_path: str | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then drain. ``admin_path``: answer admin requests on
        this unix socket (for the supervisor) instead of ``server.admin_listen``."""
        loop = asyncio.get_running_loop()
        server = self.config.server
        public = listen_socket(server.listen_address, reuse_port=reuse_port)
        self.publisher.start()
        self.outbox.start()
        timeouts = loop.create_task(enforce_timeouts(self.context), name="hookd-timeouts")
        source = _AdminView(self)
        if admin_path is None:
            admin_socket = listen_socket(server.admin_address)
            admin = await loop.create_server(lambda: AdminProtocol(source), sock=admin_socket)
        else:
            admin = await loop.create_unix_server(lambda: AdminProtocol(source), path=admin_path)
        self._servers = [
            await loop.create_server(
                lambda: HttpProtocol(self.context), sock=public, ssl=tls_context(server)
            ),
            admin,
        ]
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._start_reload)
        log.info(
            "hookd listening on %s (admin %s), %d routes",
            server.listen,
            admin_path or server.admin_listen,
            len(self.context.routes.routes),
        )
        await self._stopping.wait()
        await self.drain()
        timeouts.cancel()

    def _start_reload(self) -> None:
        if self.prepared.reread is None:
            log.warning("SIGHUP ignored: no config file to reload")
        elif self._reload is None or self._reload.done():
            self._reload = asyncio.ensure_future(self.reload())
        else:  # a reload is running: read the file once more when it is done
            self._reload.add_done_callback(lambda _: self._start_reload())

    async def reload(self) -> None:
        """Swap in the routes and secrets of the config on disk. Connections and requests in
        flight are untouched: a request keeps the route it started with. An invalid config
        is refused with a log line, and the running one stays."""
        try:
            config, routes = await asyncio.to_thread(
                reload_routes, self.prepared, self.context.routes
            )
        except (ConfigError, StartupError) as exc:
            reasons = exc.lines() if isinstance(exc, ConfigError) else [str(exc)]
            log.error("reload refused, the running config stays: %s", "; ".join(reasons))
            return
        if (config.server, config.kafka) != (self.config.server, self.config.kafka):
            log.warning("reload: [server] and [kafka] changes need a restart; routes reloaded")
        self.context.routes = routes
        log.info("reloaded: %d routes", len(routes.routes))

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


class _AdminView:
    """A serving process, as its admin listener sees it."""

    def __init__(self, hookd: Hookd) -> None:
        self._hookd = hookd

    async def not_ready(self) -> str | None:
        return self._hookd.not_ready()

    async def metrics(self) -> bytes:
        return self._hookd.metrics.render()


def _age_s(timestamp_ms: int | None) -> float:
    return 0.0 if timestamp_ms is None else max(time.time() - timestamp_ms / 1000, 0.0)


@dataclass(frozen=True)
class Prepared:
    """What every serving process starts from, built once before any fork."""

    config: Config
    routes: RouteTable
    broker: Broker
    #: Reads the config again (file and command-line overrides), for SIGHUP.
    reread: Callable[[], Config] | None = None


def prepare(config: Config, reread: Callable[[], Config] | None = None) -> Prepared:
    """Everything that can fail before serving: routes, TLS files, the broker, the topics."""
    routes = build_routes(config)
    tls_context(config.server)
    try:
        app = kafka_application(config)
    except (QuixException, httpx.HTTPError, ValueError) as exc:
        # Only Quix Cloud mode talks to anything here: the Portal API refused the token or
        # workspace (QuixApiRequestFailure), was unreachable after quixstreams' retries
        # (httpx), or Quix__Portal__Api is missing or its answer invalid (ValueError).
        raise StartupError(f"cannot get the connection settings from Quix Cloud: {exc}") from None
    broker = app.config.broker_address
    connect_timeout = config.kafka.connect_timeout_s
    try:
        TopicAdmin(broker, extra_config=config.kafka.extra).list_topics(timeout=connect_timeout)
    except KafkaException as exc:
        raise StartupError(
            f"broker not reachable within {connect_timeout:g}s (kafka.connect_timeout_s): "
            f"{exc.args[0].str() if exc.args else exc}"
        ) from None
    try:
        routes = resolve_topics(app, routes)
    except Exception as exc:  # quixstreams raises assorted types for an unreachable broker
        raise StartupError(f"cannot resolve topics on the broker: {exc}") from exc
    return Prepared(config, routes, broker, reread)


def reloaded_config(prepared: Prepared) -> Config:
    """The config as it is now on disk, validated, routes included (no broker contact).

    Raises ``ConfigError`` for an invalid config and ``StartupError`` when it changes the
    spool, which only a restart can apply.
    """
    assert prepared.reread is not None
    config = prepared.reread()
    if config.spool != prepared.config.spool:
        raise StartupError("[spool] changed; restart hookd to apply it")
    build_routes(config)
    return config


def resolved_routes(config: Config) -> RouteTable:
    """The route table of ``config`` with its topics created or looked up (blocking)."""
    routes = build_routes(config)
    try:
        return resolve_topics(kafka_application(config), routes)
    except Exception as exc:
        raise StartupError(f"cannot resolve topics on the broker: {exc}") from exc


def reload_routes(prepared: Prepared, running: RouteTable) -> tuple[Config, RouteTable]:
    """The routes of the config on disk (blocking: run it in a thread). A route whose path
    and window size stay keeps its redelivery window."""
    config = reloaded_config(prepared)
    routes = resolved_routes(config)
    kept = {route.path: route.dedup for route in running.routes}
    return config, RouteTable(
        tuple(
            dataclasses.replace(route, dedup=kept[route.path])
            if route.dedup is not None
            and (old := kept.get(route.path)) is not None
            and (old.max_entries, old.ttl_s) == (route.dedup.max_entries, route.dedup.ttl_s)
            else route
            for route in routes.routes
        )
    )


async def run_worker(
    prepared: Prepared,
    worker_index: int = 0,
    *,
    reuse_port: bool = False,
    admin_path: str | None = None,
) -> None:
    hookd = await Hookd.open(prepared, worker_index)
    await hookd.run(reuse_port=reuse_port, admin_path=admin_path)


def serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """Serve with ``server.workers`` processes (0: one per CPU); return the exit status."""
    prepared = prepare(config, reread)
    workers = config.server.workers or os.cpu_count() or 1
    if workers == 1:
        uvloop.run(run_worker(prepared))
        return 0
    from hookd.workers import supervise

    return supervise(prepared, workers)
