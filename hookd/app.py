"""One serving process: its loop, listeners, publisher, gauges, SIGHUP reload and drain.

It starts from what ``hookd.startup`` prepared (and fails there, before serving, when it
cannot); with ``workers > 1`` the supervisor in ``hookd.workers`` runs several of these.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from pathlib import Path

from hookd.admin import AdminLimits, AdminProtocol, ProcessView
from hookd.http.protocol import HttpProtocol, ServerContext, enforce_timeouts
from hookd.metrics import Gauge, Metrics
from hookd.publish.cluster import KafkaCluster
from hookd.publish.outbox import Outbox
from hookd.publish.publisher import Publisher
from hookd.rejects import Rejects, publish_and_forget
from hookd.startup import (
    Prepared,
    ReloadRefused,
    listen_socket,
    open_spool,
    plan_reload,
    tls_context,
    wanted_topics,
)

log = logging.getLogger("hookd")

#: Beyond the ack timeout, how long a request may wait to be durable before a backstop 503.
COMMIT_MARGIN_S = 10.0


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
            spool = await open_spool(Path(config.spool.path), config.spool.max_bytes, worker_index)
        return cls(prepared, Outbox(publisher, spool, metrics, worker_count=worker_count), metrics)

    def _register_gauges(self) -> None:
        """Bind the gauges of ``hookd.metrics.Gauge`` that this process reads."""
        gauge, ctx, spool = self.metrics.gauge, self.context, self.outbox.spool
        health = self.publisher.health
        gauge(Gauge.IN_FLIGHT_REQUESTS, lambda: ctx.in_flight)
        gauge(Gauge.IN_FLIGHT_BYTES, lambda: ctx.in_flight_bytes)
        gauge(Gauge.CONNECTIONS, lambda: ctx.open_connections)
        gauge(Gauge.RECEIVING_BYTES, lambda: ctx.receiving_bytes)
        gauge(
            Gauge.BROKER_UP,
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
            gauge(Gauge.SPOOL_DEAD_LETTERS, lambda: spool.dead_letters)
            gauge(Gauge.SPOOL_DEPTH, lambda: spool.depth)
            gauge(Gauge.SPOOL_BYTES, lambda: spool.size_bytes)
            gauge(Gauge.SPOOL_OLDEST_AGE, lambda: _age_s(spool.oldest_timestamp_ms))

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
        source = ProcessView(self.not_ready, self.outbox.wedged, self.metrics.render)
        limits = AdminLimits()
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
        # What start-up made (modules, config, the producer) lives as long as the process. A
        # full collection would walk it all and stall every request meanwhile (tens of ms:
        # the p99); frozen, the collector sees only what serving makes. (A forked worker's
        # collect walks only what it made since the supervisor froze the rest.)
        gc.collect()
        gc.freeze()
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
                plan_reload, self.prepared, self.context.routes
            )
        except ReloadRefused as exc:
            log.error("reload refused, the running config stays: %s", exc)
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


def _age_s(timestamp_ms: int | None) -> float:
    return 0.0 if timestamp_ms is None else max(time.time() - timestamp_ms / 1000, 0.0)


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
