"""Wiring: the loop, the listeners, the publisher, signals and the graceful drain."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import resource
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from hookd.admin import ADMIN_MAX_CONNECTIONS, AdminLimits, AdminProtocol
from hookd.config import Config, ConfigError, HostPort, ServerConfig
from hookd.http.protocol import HttpProtocol, ServerContext, enforce_timeouts
from hookd.metrics import Metrics
from hookd.publish.ack import AckMode
from hookd.publish.cluster import Broker, ClusterError, KafkaCluster
from hookd.publish.outbox import Outbox
from hookd.publish.publisher import Publisher
from hookd.publish.spool import Spool, SpoolError, SpoolLocked
from hookd.rejects import Rejects, publish_and_forget
from hookd.routing import RouteTable, build_routes

log = logging.getLogger("hookd")

#: How long a worker waits for its spool file while another worker forwards it as an orphan.
SPOOL_LOCK_WAIT_S = 30.0

#: Beyond the ack timeout, how long a request may wait to be durable before a backstop 503.
COMMIT_MARGIN_S = 10.0

#: File descriptors a serving process needs beyond its public and admin connections: the
#: listeners, librdkafka's sockets (a few per broker) and wake-up pipes, the spool's segment,
#: lock and dead-letter files, logs, the Python runtime's own.
FD_MARGIN = 256


class StartupError(Exception):
    """hookd cannot start; the message says why."""


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


def file_descriptors_needed(server: ServerConfig) -> int:
    """Open files one serving process may need: ``max_connections`` public connections (TLS
    handshakes included), a full admin listener and ``FD_MARGIN``."""
    return server.max_connections + ADMIN_MAX_CONNECTIONS + FD_MARGIN


def ensure_fd_limit(server: ServerConfig) -> None:
    """Raise the soft ``RLIMIT_NOFILE`` to what ``max_connections`` needs, or refuse to start
    when the hard limit is lower: running out of descriptors fails every webhook ("Connection
    reset by peer") and librdkafka ("Too many open files") instead of answering 503."""
    needed = file_descriptors_needed(server)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise StartupError(
            f"server.max_connections = {server.max_connections} needs {needed} open files "
            f"({server.max_connections} connections + {ADMIN_MAX_CONNECTIONS} admin + "
            f"{FD_MARGIN} for Kafka, the spool and the listeners), but the hard limit "
            f"RLIMIT_NOFILE is {hard} (soft {soft}): raise it (ulimit -Hn, systemd LimitNOFILE, "
            f"the container runtime's nofile) or lower server.max_connections to "
            f"{max(hard - ADMIN_MAX_CONNECTIONS - FD_MARGIN, 0)}"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    log.info("open-file limit raised from %d to %d for max_connections", soft, needed)


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
            tls=config.server.tls_cert is not None,
            rejects=None
            if config.kafka.rejects_topic is None
            else Rejects(
                config.kafka.rejects_topic,
                publish_and_forget(self.publisher),
                metrics.reject_dropped,
            ),
        )
        self._stopping = asyncio.Event()
        self._reload: asyncio.Future[None] | None = None
        self._servers: list[asyncio.Server] = []
        self._register_gauges()

    @classmethod
    async def open(cls, prepared: Prepared, worker_index: int = 0, worker_count: int = 1) -> Hookd:
        config = prepared.config
        metrics = Metrics()
        publisher = Publisher(
            KafkaCluster(config, prepared.broker),
            metrics,
            ack_timeout_s=config.kafka.ack_timeout_s,
            topics=wanted_topics(config, prepared.routes),
            topic_names=prepared.topic_names,
            connected=prepared.online,
        )
        spool = None
        if config.spool is not None:
            spool = await _open_spool(Path(config.spool.path), config.spool.max_bytes, worker_index)
        return cls(prepared, Outbox(publisher, spool, metrics, worker_count=worker_count), metrics)

    def _register_gauges(self) -> None:
        gauge, ctx, spool = self.metrics.gauge, self.context, self.outbox.spool
        health = self.publisher.health
        gauge("hookd_in_flight_requests", "Requests waiting to be durable.", lambda: ctx.in_flight)
        gauge(
            "hookd_in_flight_bytes",
            "Body bytes of requests waiting to be durable.",
            lambda: ctx.in_flight_bytes,
        )
        gauge(
            "hookd_connections",
            "Open client connections, TLS handshakes and closing ones included.",
            lambda: ctx.open_connections,
        )
        gauge(
            "hookd_receiving_bytes",
            "Body bytes received of requests still arriving.",
            lambda: ctx.receiving_bytes,
        )
        gauge(
            "hookd_broker_up",
            "1 when the broker answered recently and deliveries are not failing.",
            lambda: int(health.answering(time.monotonic()) and health.failing_reason() is None),
        )
        # hookd_route_silent: the routes with expect_every_s, as the table is now (reloads)
        self.metrics.expect_traffic(
            lambda: [
                (route.path, route.config.expect_every_s)
                for route in ctx.routes.routes
                if route.config.expect_every_s is not None
            ]
        )
        if spool is not None:
            gauge(
                "hookd_spool_dead_letters",
                "Spooled records the broker refused for good, set aside in the spool.",
                lambda: spool.dead_letters,
            )
            gauge("hookd_spool_depth", "Records in the spool.", lambda: spool.depth)
            gauge(
                "hookd_spool_bytes",
                "Bytes the spool's segment files hold (max_bytes bounds it).",
                lambda: spool.size_bytes,
            )
            gauge(
                "hookd_spool_oldest_age_seconds",
                "Age of the oldest spooled record (0 when empty).",
                lambda: _age_s(spool.oldest_timestamp_ms),
            )

    def not_ready(self) -> str | None:
        """Why the load balancer should not send traffic here, or ``None`` (see
        ``Outbox.not_ready``)."""
        if self.context.draining:
            return "draining"
        return self.outbox.not_ready() or self.context.budget_spent()

    async def run(self, *, reuse_port: bool = False, admin_path: str | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then drain. ``admin_path``: answer admin requests on
        this unix socket (for the supervisor) instead of ``server.admin_listen``."""
        loop = asyncio.get_running_loop()
        server = self.config.server
        public = listen_socket(server.listen_address, reuse_port=reuse_port)
        self.outbox.start()
        timeouts = loop.create_task(enforce_timeouts(self.context), name="hookd-timeouts")
        source, limits = _AdminView(self), AdminLimits()
        if admin_path is None:
            admin_socket = listen_socket(server.admin_address)
            admin = await loop.create_server(
                lambda: AdminProtocol(source, limits), sock=admin_socket
            )
        else:
            admin = await loop.create_unix_server(
                lambda: AdminProtocol(source, limits), path=admin_path
            )
        tls = tls_context(server)
        self._servers = [
            await loop.create_server(
                lambda: HttpProtocol(self.context),
                sock=public,
                ssl=tls,
                # a handshake is counted as a connection; it gets as long as a request head
                ssl_handshake_timeout=server.header_timeout_s if tls is not None else None,
            ),
            admin,
        ]
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._start_reload)
        log.info(  # a worker's admin socket is private: the admin process serves admin_listen
            "hookd listening on %s (admin %s), %d routes",
            server.listen,
            server.admin_listen,
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
        except (ConfigError, ReloadRefused) as exc:
            reasons = exc.lines() if isinstance(exc, ConfigError) else [str(exc)]
            log.error("reload refused, the running config stays: %s", "; ".join(reasons))
            return
        if (config.server, config.kafka) != (self.config.server, self.config.kafka):
            log.warning("reload: [server] and [kafka] changes need a restart; routes reloaded")
        self.publisher.want_topics(route.topic for route in routes.routes)
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

    async def wedged(self) -> str | None:
        return self._hookd.outbox.wedged()

    async def metrics(self) -> bytes:
        return self._hookd.metrics.render()


def _age_s(timestamp_ms: int | None) -> float:
    return 0.0 if timestamp_ms is None else max(time.time() - timestamp_ms / 1000, 0.0)


@dataclass(frozen=True)
class Prepared:
    """What every serving process starts from, built once before any fork (plain data: no
    Kafka client survives a fork)."""

    config: Config
    routes: RouteTable
    #: The connection settings; ``None`` when Quix Cloud's Portal API could not be reached.
    broker: Broker | None
    #: Configured topic name → the name to produce to (workspace-prefixed on Quix Cloud).
    topic_names: dict[str, str] = field(default_factory=dict)
    #: The broker answered and every topic was resolved; otherwise hookd started offline.
    online: bool = True
    #: Reads the config again (file and command-line overrides), for SIGHUP.
    reread: Callable[[], Config] | None = None


class ReloadRefused(Exception):
    """The config on disk cannot be applied by a reload; the running one stays."""


def prepare(config: Config, reread: Callable[[], Config] | None = None) -> Prepared:
    """Everything that can fail before serving: routes, TLS files, the broker, the topics.

    A broker (or Quix Portal API) that cannot be reached is fatal only when no route can use
    the spool: with one, hookd starts offline -- spool-capable routes answer 2xx from the
    spool, the others 503 -- and each worker connects, creates its topics and starts
    forwarding as soon as the broker answers.
    """
    routes = build_routes(config)
    tls_context(config.server)
    cluster = KafkaCluster(config)
    timeout = config.kafka.connect_timeout_s
    try:
        cluster.connect(timeout)
    except ClusterError as exc:
        if not any(route.ack_mode is not AckMode.KAFKA for route in routes.routes):
            raise StartupError(f"{exc} (kafka.connect_timeout_s; no route can spool)") from None
        log.warning(
            "starting offline: %s; routes with a spool answer 2xx from it, the others 503, "
            "until the broker answers",
            exc,
        )
        return Prepared(config, routes, cluster.broker, online=False, reread=reread)
    try:
        names = cluster.resolve(sorted(wanted_topics(config, routes)))
    except ClusterError as exc:
        raise StartupError(f"cannot resolve topics on the broker: {exc}") from None
    return Prepared(config, routes, cluster.broker, names, reread=reread)


def wanted_topics(config: Config, routes: RouteTable) -> set[str]:
    """The topics hookd produces to: its routes', and ``[kafka] rejects_topic``."""
    topics = {route.topic for route in routes.routes}
    if config.kafka.rejects_topic is not None:
        topics.add(config.kafka.rejects_topic)
    return topics


def reloaded_config(prepared: Prepared) -> Config:
    """The config as it is now on disk, validated, routes included (no broker contact).

    Raises ``ConfigError`` for an invalid config and ``ReloadRefused`` when it changes the
    spool, which only a restart can apply.
    """
    assert prepared.reread is not None
    config = prepared.reread()
    if config.spool != prepared.config.spool:
        raise ReloadRefused("[spool] changed; restart hookd to apply it")
    build_routes(config)
    return config


def reload_routes(prepared: Prepared, running: RouteTable) -> tuple[Config, RouteTable]:
    """The routes of the config on disk. A route whose path and window size stay keeps its
    redelivery window. New topics are created by the publisher when the broker answers."""
    config = reloaded_config(prepared)
    routes = build_routes(config)
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


async def _open_spool(directory: Path, max_bytes: int, worker_index: int) -> Spool:
    """This worker's spool file; while another worker forwards it as an orphan (the worker
    count grew back), wait for it."""
    deadline = time.monotonic() + SPOOL_LOCK_WAIT_S
    while True:
        try:
            return await Spool.open(directory, max_bytes, worker_index)
        except SpoolLocked as exc:
            if time.monotonic() >= deadline:
                raise StartupError(f"cannot open the spool: {exc}") from None
            await asyncio.sleep(0.5)
        except SpoolError as exc:
            raise StartupError(f"cannot open the spool: {exc}") from None


async def run_worker(
    prepared: Prepared,
    worker_index: int = 0,
    worker_count: int = 1,
    *,
    reuse_port: bool = False,
    admin_path: str | None = None,
) -> None:
    hookd = await Hookd.open(prepared, worker_index, worker_count)
    await hookd.run(reuse_port=reuse_port, admin_path=admin_path)


def serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """Serve with ``server.workers`` processes (0: one per CPU); return the exit status."""
    ensure_fd_limit(config.server)  # inherited by every worker
    prepared = prepare(config, reread)
    workers = config.server.workers or os.cpu_count() or 1
    if workers == 1:
        uvloop.run(run_worker(prepared))
        return 0
    from hookd.workers import supervise

    return supervise(prepared, workers)
