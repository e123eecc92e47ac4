"""Start-up: everything that can fail before serving, and the plan of a reload.

``prepare`` checks, once and before any fork, what every serving process needs (routes, TLS
files, the broker, the topics) and hands them ``Prepared``; the listen socket, the TLS context,
the open-file limit and a worker's spool are made here too, each failing with a
``StartupError`` that says why. ``plan_reload`` is the start-up of a reload: it reads and
validates the config on disk, or refuses it with ``ReloadRefused``, and never contacts the
broker (the supervisor, which forks, calls it too). Serving is ``hookd.app``; how many
processes serve is ``hookd.workers``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hookd.admin import ADMIN_MAX_CONNECTIONS
from hookd.config import Config, ConfigError, HostPort, ServerConfig
from hookd.publish.ack import AckMode
from hookd.publish.cluster import Broker, ClusterError, KafkaCluster
from hookd.publish.spool import Spool, SpoolError, SpoolLocked
from hookd.routing import RouteTable, build_routes

log = logging.getLogger("hookd")

#: How long a worker waits for its spool file while another worker forwards it as an orphan.
SPOOL_LOCK_WAIT_S = 30.0

#: File descriptors a serving process needs beyond its public and admin connections: the
#: listeners, librdkafka's sockets (a few per broker) and wake-up pipes, the spool's segment,
#: lock and dead-letter files, logs, the Python runtime's own.
FD_MARGIN = 256


class StartupError(Exception):
    """hookd cannot start; the message says why."""


class ReloadRefused(Exception):
    """The config on disk cannot be applied by a reload; the running one stays. The message
    gives every reason, joined by "; "."""


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
    #: Reads the config again (file and command-line overrides), for ``plan_reload``;
    #: ``None``: there is no config file, and SIGHUP reloads nothing.
    reread: Callable[[], Config] | None = None


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


def plan_reload(prepared: Prepared, running: RouteTable) -> tuple[Config, RouteTable]:
    """The config on disk and its routes, validated, with no broker contact.

    A route whose path and window size stay keeps its redelivery window from ``running``.
    New topics are created by the publisher when the broker answers. Raises ``ReloadRefused``
    for an invalid config (one reason per problem) and for a changed ``[spool]``, which only
    a restart can apply.
    """
    assert prepared.reread is not None
    try:
        config = prepared.reread()
        if config.spool != prepared.config.spool:
            raise ReloadRefused("[spool] changed; restart hookd to apply it")
        routes = build_routes(config)
    except ConfigError as exc:
        raise ReloadRefused("; ".join(exc.lines())) from None
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


async def open_spool(directory: Path, max_bytes: int, worker_index: int) -> Spool:
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
