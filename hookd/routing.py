"""The route table: request path → ``Route`` (verifier, topic, key rule, limits)."""

from __future__ import annotations

from dataclasses import dataclass

from hookd.config import Config, ConfigError, RouteConfig, respond_within_s, topic_warnings
from hookd.dedup import DedupWindow
from hookd.net.networks import NetworkSet, parse_network
from hookd.publish.ack import AckMode
from hookd.record import KeyRule
from hookd.target import split_target
from hookd.verify import SCHEMES, SchemeConfigError, Verifier


@dataclass(frozen=True, slots=True)
class Route:
    """A configured endpoint, ready to serve: everything per-route is built once, here."""

    path: str
    path_bytes: bytes
    topic: str
    scheme: str
    verifier: Verifier
    key_rule: KeyRule
    max_body_bytes: int
    ack_mode: AckMode
    #: Answer this long after the request head arrived at the latest (``respond_within_s``).
    respond_within_s: float
    #: Delivery ids already published; ``None`` when the route turned dedup off.
    dedup: DedupWindow | None
    config: RouteConfig
    #: ``allow_from``: clients outside these networks get 403; ``None``: any client.
    allow: NetworkSet | None = None

    def allows(self, client: str) -> bool:
        """Whether a request from ``client`` (its address, see hookd.net.client_address) may
        be taken on this route."""
        return self.allow is None or client in self.allow


class RouteTable:
    """Exact-path lookup; the query string is not part of the match."""

    __slots__ = ("_by_path", "routes")

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._by_path = {route.path_bytes: route for route in routes}

    def lookup(self, target: bytes) -> Route | None:
        return self._by_path.get(split_target(target)[0])


def ack_mode(route: RouteConfig, *, spool_configured: bool) -> AckMode:
    """``ack`` and ``fallback`` as one mode; the fallback defaults to the spool when one exists."""
    if route.ack == "spool":
        return AckMode.SPOOL
    fallback = route.fallback or ("spool" if spool_configured else "reject")
    return AckMode.KAFKA_OR_SPOOL if fallback == "spool" else AckMode.KAFKA


def build_routes(config: Config) -> RouteTable:
    """Build every route's verifier; raise ``ConfigError`` naming each route that cannot be."""
    problems: list[tuple[str, str]] = []
    routes: list[Route] = []
    for i, route in enumerate(config.routes):
        scheme = SCHEMES.get(route.verify)
        if scheme is None:
            known = ", ".join(sorted(SCHEMES))
            problems.append((f"routes[{i}].verify", f'unknown scheme "{route.verify}" ({known})'))
            continue
        try:
            verifier = scheme.from_route(route)
        except SchemeConfigError as exc:
            problems.append((f"routes[{i}].{exc.option}", exc.reason))
            continue
        routes.append(
            Route(
                path=route.path,
                path_bytes=route.path.encode(),
                topic=route.topic,
                scheme=route.verify,
                verifier=verifier,
                key_rule=KeyRule(
                    route.key,
                    forward_headers=scheme.forward_headers(route),
                    forward_query=route.forward_query,
                ),
                max_body_bytes=route.max_body_bytes or config.server.max_body_bytes,
                ack_mode=ack_mode(route, spool_configured=config.spool is not None),
                respond_within_s=respond_within_s(
                    route, scheme.default_respond_within_s, config.kafka.ack_timeout_s
                ),
                dedup=DedupWindow(route.dedup_entries, route.dedup_ttl_s)
                if route.dedup_entries
                else None,
                config=route,
                allow=network_set(route.allow_from),
            )
        )
    if not config.routes:
        problems.append(("routes", "no routes configured: add at least one [[routes]] table"))
    if problems:
        raise ConfigError(problems)
    return RouteTable(tuple(routes))


def network_set(networks: tuple[str, ...] | None) -> NetworkSet | None:
    """Validated network strings (``allow_from``, ``trusted_proxies``) as a set to match."""
    if networks is None:
        return None
    return NetworkSet(parse_network(network) for network in networks)


def config_warnings(config: Config) -> list[tuple[str, str]]:
    """What is valid but likely a mistake, as ``(key path, what)``: ``hookd check`` prints
    these and ``hookd serve`` logs them at start. Never names a secret's value."""
    found = [
        (
            f"server.trusted_proxies[{i}]",
            f"{network} trusts every peer: any client can name its own address in "
            "X-Forwarded-For or Forwarded; list only your proxies' networks",
        )
        for i, network in enumerate(config.server.trusted_proxies)
        if network in ("0.0.0.0/0", "::/0")
    ]
    found += topic_warnings(config)
    for i, route in enumerate(config.routes):
        scheme = SCHEMES.get(route.verify)
        if scheme is None:
            continue
        if route.verify == "none":
            found.append((f"routes[{i}].verify", 'accepts unsigned requests (verify = "none")'))
        for j, secret in enumerate(route.secrets):
            found += [(f"routes[{i}].secrets[{j}]", why) for why in scheme.secret_warnings(secret)]
    return sorted(found, key=lambda item: _route_index(item[0]))


def _route_index(path: str) -> int:
    if not path.startswith("routes["):
        return -1
    _, _, rest = path.partition("[")
    number, _, _ = rest.partition("]")
    return int(number) if number.isdigit() else -1
