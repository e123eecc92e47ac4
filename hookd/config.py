"""Configuration: TOML with ``${VAR}`` expansion, validated into frozen models.

Loading is pure apart from reading the file and ``file:`` secrets. Every problem is collected
and reported as ``<key.path>: <reason>``, so ``hookd check`` can list them all at once.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hookd.net import allow
from hookd.net.networks import parse_network

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FILE_PREFIX = "file:"

#: Set by Quix Cloud in a deployment's environment; quixstreams reads it itself.
QUIX_SDK_TOKEN_ENV = "Quix__Sdk__Token"
QUIX_BROKER_ADDRESS_ENV = "Quix__Broker__Address"
DEFAULT_BROKER = "127.0.0.1:9092"
#: librdkafka's default ``message.max.bytes``, and the room a record needs beyond its body.
KAFKA_MESSAGE_MAX_BYTES = 1_000_000
RECORD_OVERHEAD_BYTES = 16_384
#: Producer settings the guarantee depends on; ``[kafka.extra]`` may not change them.
FIXED_PRODUCER_SETTINGS = frozenset({"acks", "enable.idempotence", "message.timeout.ms"})

#: Kafka's rule for a topic name (``org.apache.kafka.common.internals.Topic``): what else the
#: broker refuses, or a client mangles on the way.
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")

#: An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: A header whose name holds one of these may carry a credential: never copied into a record.
CREDENTIAL_HEADER_WORDS = (
    "auth",
    "cookie",
    "signature",
    "token",
    "secret",
    "hmac",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "private-key",
    "credential",
)

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


def _network(value: str) -> str:
    if value.startswith(allow.FILE_PREFIX):
        raise ValueError("file: lists are read by hookd.config.validate, not here")
    return str(parse_network(value))


#: An IP network in CIDR notation, or a bare address (a /32 or /128), normalised.
Network = Annotated[str, AfterValidator(_network)]


class ConfigError(Exception):
    """One or more configuration problems, each ``(key_path, reason)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"config error: {path}: {reason}" for path, reason in self.problems]


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(value: str) -> HostPort:
    """Parse ``HOST:PORT`` or ``[IPV6]:PORT``; raise ``ValueError`` with a readable reason."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} is out of range 0-65535")
    return HostPort(host, number)


def _kafka_topic_name(value: str) -> str:
    if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{value!r} is not a Kafka topic name: 1 to 249 of a-z A-Z 0-9 . _ -, "
            'and not "." or ".."'
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    listen: str = "0.0.0.0:8080"
    admin_listen: str = "127.0.0.1:9090"
    workers: Annotated[int, Field(ge=0)] = 1
    #: 960 KiB: a record (body + key + headers) must fit librdkafka's default
    #: message.max.bytes of 1,000,000; see ``check_kafka_fits``.
    max_body_bytes: PositiveInt = 983_040
    max_header_bytes: PositiveInt = 16_384
    max_connections: PositiveInt = 10_000
    max_in_flight: PositiveInt = 10_000
    max_in_flight_bytes: PositiveInt = 268_435_456
    header_timeout_s: PositiveFloat = 10
    body_timeout_s: PositiveFloat = 30
    idle_timeout_s: PositiveFloat = 75
    #: A client that does not read hookd's answers (its last one, or any while it keeps
    #: sending) for this long is cut off: the socket is aborted, not left to drain.
    write_timeout_s: PositiveFloat = 10
    access_log: bool = False
    #: TLS on the public listener, for deployments that expose hookd directly.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Peers whose ``Forwarded`` / ``X-Forwarded-For`` name the client (load balancers,
    #: ingress); from any other peer those headers are ignored. See hookd.net.client_address.
    trusted_proxies: tuple[Network, ...] = ()
    #: Every connection on the public listener starts with a PROXY protocol v1 or v2 header
    #: (AWS NLB, HAProxy), which names the client; one without is refused.
    proxy_protocol: bool = False

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.proxy_protocol and self.tls_cert is not None:
            raise ValueError(
                "proxy_protocol with tls_cert is not supported (the PROXY header comes before "
                "the TLS handshake): terminate TLS at the proxy, or pass it through without "
                "proxy_protocol"
            )
        return self

    @field_validator("listen", "admin_listen")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @property
    def listen_address(self) -> HostPort:
        return parse_host_port(self.listen)

    @property
    def admin_address(self) -> HostPort:
        return parse_host_port(self.admin_listen)


class KafkaConfig(_Model):
    broker_address: str | None = None
    ack_timeout_s: PositiveFloat = 8
    connect_timeout_s: PositiveFloat = 30
    linger_ms: Annotated[float, Field(ge=0)] = 2
    #: Create a route's topic when it does not exist (false: a missing topic stops the start).
    create_topics: bool = True
    #: For the topics hookd creates (never changes an existing one); unset: 1 partition and
    #: replication factor 1 on plain Kafka, the Portal's defaults on Quix Cloud.
    topic_partitions: PositiveInt | None = None
    topic_replication_factor: PositiveInt | None = None
    #: One record per request refused on a known route (401, 403, 413, 400 after routing), to
    #: this topic, rate-limited per route; unset: none (hookd.rejects, README "The rejects topic").
    rejects_topic: str | None = None
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("rejects_topic")
    @classmethod
    def _rejects_topic_name(cls, value: str | None) -> str | None:
        return None if value is None else _kafka_topic_name(value)

    @field_validator("extra")
    @classmethod
    def _no_weaker_guarantee(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        fixed = sorted(FIXED_PRODUCER_SETTINGS & value.keys())
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)} cannot be set: hookd fixes acks=all, idempotence, "
                "and message.timeout.ms from ack_timeout_s"
            )
        return value

    def broker(self, env: Mapping[str, str]) -> str | None:
        """The bootstrap address, or ``None`` to connect through Quix Cloud. quixstreams
        itself prefers ``Quix__Broker__Address`` to Quix Cloud, and so does this."""
        address = self.broker_address or env.get(QUIX_BROKER_ADDRESS_ENV)
        if address is None and env.get(QUIX_SDK_TOKEN_ENV):
            return None
        return address or DEFAULT_BROKER


class SpoolConfig(_Model):
    path: Annotated[str, Field(min_length=1)]
    max_bytes: PositiveInt = 1_073_741_824


class RouteConfig(_Model):
    path: str
    topic: Annotated[str, Field(min_length=1)]
    verify: str
    secrets: tuple[str, ...] = ()
    tolerance_s: Annotated[float, Field(ge=0)] | None = None
    key: str | None = None
    ack: Literal["kafka", "spool"] = "kafka"
    #: When Kafka cannot ack: "spool" (default when [spool] is set) or "reject" (503).
    fallback: Literal["spool", "reject"] | None = None
    #: Answer (2xx, or 503) this long after the request head arrived at the latest; default:
    #: the scheme's, a margin under the provider's delivery timeout. See ``respond_within_s``.
    respond_within_s: PositiveFloat | None = None
    max_body_bytes: PositiveInt | None = None
    dedup_entries: Annotated[int, Field(ge=0)] = 10_000  # 0 turns redelivery dedup off
    dedup_ttl_s: PositiveFloat = 86_400
    #: Request headers copied into the record as ``hookd-header-<name>`` (names compared
    #: case-insensitively); ``None``: the scheme's defaults, ``[]``: none. Unsigned.
    forward_headers: tuple[str, ...] | None = None
    #: Copy the raw query string into the record as ``hookd-query``.
    forward_query: bool = False
    #: The sender is expected to deliver at least this often: ``hookd_route_silent`` is 1
    #: while the route accepted nothing for longer (the HookdSourceSilent alert).
    expect_every_s: PositiveFloat | None = None
    #: Per-route overrides of ``[kafka] topic_partitions`` / ``topic_replication_factor``.
    topic_partitions: PositiveInt | None = None
    topic_replication_factor: PositiveInt | None = None
    #: Only clients in these networks (``file:PATH`` entries are read by ``validate`` into
    #: the networks they list) get past 403; ``None``: any address.
    allow_from: tuple[Network, ...] | None = None
    #: With ``[kafka] rejects_topic``: the first this many bytes of a refused request's body
    #: go into its rejects record (base64); 0: none, only its size and SHA-256.
    capture_rejected_body: Annotated[int, Field(ge=0, le=65_536)] = 0
    # Scheme options (see docs/providers.md); a scheme refuses the ones it does not read.
    header: str | None = None
    algorithm: Literal["sha1", "sha256", "sha512"] | None = None
    encoding: Literal["hex", "base64"] | None = None
    prefix: str | None = None
    template: str | None = None
    timestamp_header: str | None = None
    id_header: str | None = None
    public_url: str | None = None
    public_key: tuple[str, ...] | None = None

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value or "#" in value:
            raise ValueError("must start with '/' and hold no query or fragment")
        return value

    @field_validator("topic")
    @classmethod
    def _kafka_topic_name(cls, value: str) -> str:
        return _kafka_topic_name(value)

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        names: list[str] = []
        for name in value:
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name")
            lower = name.lower()
            word = next((w for w in CREDENTIAL_HEADER_WORDS if w in lower), None)
            if word is not None:
                raise ValueError(
                    f"{name!r} may carry a credential ({word!r} in its name): headers with "
                    f"{', '.join(CREDENTIAL_HEADER_WORDS)} in their name are never forwarded"
                )
            if lower not in names:
                names.append(lower)
        return tuple(names)

    @field_validator("allow_from")
    @classmethod
    def _allows_someone(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError(
                "an empty allow_from refuses every request; leave it out to accept any address"
            )
        return value

    @field_validator("secrets")
    @classmethod
    def _no_empty_secret(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # An empty secret signs for anyone: usually a variable that is set but empty.
        for secret in value:
            if not secret.strip():
                raise ValueError("an empty secret would accept anything (is a variable empty?)")
        return value

    @field_validator("public_key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("key")
    @classmethod
    def _key_rule(cls, value: str | None) -> str | None:
        if value is None or value == "none":
            return value
        kind, sep, arg = value.partition(":")
        if not sep or kind not in ("header", "json") or not arg:
            raise ValueError('expected "header:NAME", "json:/POINTER" or "none"')
        if kind == "json" and not arg.startswith("/"):
            raise ValueError("a JSON pointer starts with '/'")
        return value


class Config(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    spool: SpoolConfig | None = None
    routes: tuple[RouteConfig, ...] = ()

    def with_overrides(
        self,
        listen: str | None = None,
        workers: int | None = None,
        broker: str | None = None,
        admin_listen: str | None = None,
    ) -> Config:
        """Return a copy with command-line overrides applied; raise ``ConfigError`` if invalid."""
        server = self.server.model_dump()
        kafka = self.kafka.model_dump()
        if listen is not None:
            server["listen"] = listen
        if admin_listen is not None:
            server["admin_listen"] = admin_listen
        if workers is not None:
            server["workers"] = workers
        if broker is not None:
            kafka["broker_address"] = broker
        try:
            settings = Config.model_validate({"server": server, "kafka": kafka})
        except ValidationError as exc:
            raise ConfigError([(_key_path(e["loc"]), _reason(e)) for e in exc.errors()]) from None
        return self.model_copy(update={"server": settings.server, "kafka": settings.kafka})


def expand_env(
    raw: Any, env: Mapping[str, str], path: str = ""
) -> tuple[Any, list[tuple[str, str]]]:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed TOML tree."""
    problems: list[tuple[str, str]] = []

    def walk(node: Any, at: str) -> Any:
        if isinstance(node, str):

            def substitute(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                if name in env:
                    return env[name]
                if default is not None:
                    return default
                problems.append((at, f"environment variable ${{{name}}} is not set"))
                return ""

            return _ENV_REF.sub(substitute, node)
        if isinstance(node, dict):
            return {k: walk(v, f"{at}.{k}" if at else k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{at}[{i}]") for i, v in enumerate(node)]
        return node

    return walk(raw, path), problems


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _reason(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _read_file_secrets(raw: dict[str, Any], base: Path) -> list[tuple[str, str]]:
    """Replace ``file:PATH`` secrets in place by the file's content (trailing newline stripped)."""
    problems: list[tuple[str, str]] = []
    routes = raw.get("routes")
    if not isinstance(routes, list):
        return problems
    for i, route in enumerate(routes):
        secrets = route.get("secrets") if isinstance(route, dict) else None
        if not isinstance(secrets, list):
            continue
        for j, secret in enumerate(secrets):
            if isinstance(secret, str) and secret.startswith(_FILE_PREFIX):
                file = base / secret.removeprefix(_FILE_PREFIX)
                try:
                    secrets[j] = file.read_text(encoding="utf-8").rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as exc:
                    problems.append((f"routes[{i}].secrets[{j}]", f"cannot read {file}: {exc}"))
    return problems


def _read_allow_lists(raw: dict[str, Any], base: Path) -> list[tuple[str, str]]:
    """Replace each route's ``allow_from`` in place by the networks it lists (``file:PATH``
    entries read, relative to the config's directory); problems name the entry as written."""
    problems: list[tuple[str, str]] = []
    routes = raw.get("routes")
    if not isinstance(routes, list):
        return problems
    for i, route in enumerate(routes):
        entries = route.get("allow_from") if isinstance(route, dict) else None
        if not isinstance(entries, list):
            continue
        networks, wrong = allow.resolve(entries, base)
        route["allow_from"] = networks
        problems += [(f"routes[{i}].allow_from[{j}]", reason) for j, reason in wrong]
    return problems


def validate(raw: dict[str, Any], env: Mapping[str, str], base: Path = Path()) -> Config:
    """Expand, read secret files and validate a parsed TOML tree; raise ``ConfigError``.

    Every problem is found in one pass: the field errors of every section and route, and the
    checks across keys (duplicate paths, Kafka record size, spool modes, each route's scheme)
    on every part that is valid by itself, so that fixing one problem never reveals another.
    """
    expanded, problems = expand_env(raw, env)
    problems += _read_file_secrets(expanded, base)
    problems += _read_allow_lists(expanded, base)
    reported = [path for path, _ in problems]
    try:
        config: Config | None = Config.model_validate(expanded)
    except ValidationError as exc:
        config = None
        problems += [(_key_path(error["loc"]), _reason(error)) for error in exc.errors()]
    fields_end = len(problems)
    parts = _valid_parts(expanded, config)
    problems += _duplicate_paths(expanded)
    problems += _colliding_topics(parts.routes)
    if parts.kafka is not None:
        problems += _topic_settings_agree(parts.kafka, parts.routes)
        problems += _rejects_topic_apart(parts.kafka, parts.routes)
    for i, route in parts.routes:
        if parts.server is not None and parts.kafka is not None:
            problems += check_kafka_fits(parts.kafka, parts.server, i, route)
        if parts.kafka is not None:
            problems += check_respond_within(parts.kafka, i, route)
        if parts.spool_absent:
            if route.ack == "spool":
                problems.append((f"routes[{i}].ack", 'ack = "spool" needs a [spool] section'))
            if route.fallback == "spool":
                problems.append(
                    (f"routes[{i}].fallback", 'fallback = "spool" needs a [spool] section')
                )
        problems += check_scheme(i, route)
    # A missing variable already explains what its empty value then breaks, and a key left
    # out to check the rest of its route has its own problem reported.
    problems = [
        (path, reason)
        for n, (path, reason) in enumerate(problems)
        if n < len(reported)
        or not (
            any(earlier.startswith(path) for earlier in reported)
            or (n >= fields_end and any(_within(path, key) for key in parts.masked))
        )
    ]
    if problems:
        raise ConfigError(sorted(problems, key=_problem_order))
    assert config is not None
    return config


@dataclass(frozen=True, slots=True)
class _Parts:
    """The sections that are valid by themselves, and every route that is, or can be once its
    invalid keys are left out (``masked``: their problems are reported already)."""

    server: ServerConfig | None
    kafka: KafkaConfig | None
    spool_absent: bool
    routes: list[tuple[int, RouteConfig]]
    masked: list[str]


#: Stand-ins for a required route key whose own value is invalid, to check the rest.
_STAND_INS = {"path": "/", "topic": "t"}


def _valid_parts(expanded: Any, config: Config | None) -> _Parts:
    if config is not None:
        return _Parts(
            config.server, config.kafka, config.spool is None, list(enumerate(config.routes)), []
        )
    tree = expanded if isinstance(expanded, dict) else {}

    def section(model: type[_Model], value: Any) -> Any:
        try:
            return model.model_validate({} if value is None else value)
        except ValidationError:
            return None

    routes: list[tuple[int, RouteConfig]] = []
    masked: list[str] = []
    raw_routes = tree.get("routes")
    for i, raw_route in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        if not isinstance(raw_route, dict):
            continue
        try:
            routes.append((i, RouteConfig.model_validate(raw_route)))
            continue
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        if "verify" in bad or not bad:
            continue
        rest = {k: v for k, v in raw_route.items() if k not in bad}
        rest.update({k: v for k, v in _STAND_INS.items() if k in bad})
        route = section(RouteConfig, rest)
        if route is not None:
            routes.append((i, route))
            masked += [f"routes[{i}].{key}" for key in bad]
    return _Parts(
        section(ServerConfig, tree.get("server")),
        section(KafkaConfig, tree.get("kafka")),
        tree.get("spool") is None,
        routes,
        masked,
    )


def _within(path: str, key: str) -> bool:
    return path == key or path.startswith((key + ".", key + "["))


def _duplicate_paths(expanded: Any) -> list[tuple[str, str]]:
    """From the raw routes, so that a route with another mistake still counts."""
    routes = expanded.get("routes") if isinstance(expanded, dict) else None
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        path = route.get("path") if isinstance(route, dict) else None
        if not isinstance(path, str):
            continue
        if path in seen:
            problems.append((f"routes[{i}].path", f"duplicate of routes[{seen[path]}]"))
        seen.setdefault(path, i)
    return problems


def _colliding_topics(routes: list[tuple[int, RouteConfig]]) -> list[tuple[str, str]]:
    """Kafka refuses a topic whose name differs from an existing one only by ``.`` against
    ``_`` (they are one in its metric names): the second route's topic could never exist."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, tuple[int, str]] = {}
    for i, route in routes:
        folded = route.topic.replace(".", "_")
        first = seen.setdefault(folded, (i, route.topic))
        if first[1] != route.topic:
            problems.append(
                (
                    f"routes[{i}].topic",
                    f"{route.topic!r} collides with {first[1]!r} (routes[{first[0]}].topic): "
                    "Kafka treats '.' and '_' alike in metric names and refuses the second",
                )
            )
    return problems


def _rejects_topic_apart(
    kafka: KafkaConfig, routes: list[tuple[int, RouteConfig]]
) -> list[tuple[str, str]]:
    """Refusal records never share a topic with events: a consumer would take them for ones."""
    rejects = kafka.rejects_topic
    if rejects is None:
        return []
    folded = rejects.replace(".", "_")
    for i, route in routes:
        if route.topic.replace(".", "_") == folded:
            return [
                (
                    "kafka.rejects_topic",
                    f"{rejects!r} is routes[{i}].topic (or collides with it): refusal records "
                    "need a topic of their own",
                )
            ]
    return []


#: A topic's creation settings: (partitions, replication factor); ``None``: not set.
TopicSettings = tuple[int | None, int | None]


def route_topic_settings(kafka: KafkaConfig, route: RouteConfig) -> TopicSettings:
    return (
        route.topic_partitions or kafka.topic_partitions,
        route.topic_replication_factor or kafka.topic_replication_factor,
    )


def topic_settings(config: Config) -> dict[str, TopicSettings]:
    """Each route topic's creation settings (``validate`` made routes of a topic agree)."""
    return {route.topic: route_topic_settings(config.kafka, route) for route in config.routes}


def _topic_settings_agree(
    kafka: KafkaConfig, routes: list[tuple[int, RouteConfig]]
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    first: dict[str, tuple[int, TopicSettings]] = {}
    for i, route in routes:
        settings = route_topic_settings(kafka, route)
        index, earlier = first.setdefault(route.topic, (i, settings))
        if earlier != settings:
            problems.append(
                (
                    f"routes[{i}].topic_partitions"
                    if earlier[0] != settings[0]
                    else f"routes[{i}].topic_replication_factor",
                    f"topic {route.topic!r} is created with other settings by routes[{index}]: "
                    "routes of one topic must agree",
                )
            )
    return problems


def topic_warnings(config: Config) -> list[tuple[str, str]]:
    """Valid but risky topic names: ``.`` and ``_`` together (Kafka's own warning)."""
    return [
        (
            f"routes[{i}].topic",
            f"{route.topic!r} mixes '.' and '_', which collide in Kafka's metric names; "
            "use one of them",
        )
        for i, route in enumerate(config.routes)
        if "." in route.topic and "_" in route.topic
    ]


def check_scheme(index: int, route: RouteConfig) -> list[tuple[str, str]]:
    """The route's scheme exists and every option fits it (the verifier is built to see)."""
    from hookd.verify import SCHEMES  # hookd.verify imports this module

    scheme = SCHEMES.get(route.verify)
    if scheme is None:
        known = ", ".join(sorted(SCHEMES))
        return [(f"routes[{index}].verify", f'unknown scheme "{route.verify}" ({known})')]
    return [(f"routes[{index}].{e.option}", e.reason) for e in scheme.route_problems(route)]


_SECTIONS = {"server": 0, "kafka": 1, "spool": 2, "routes": 3}


def _problem_order(problem: tuple[str, str]) -> tuple[int, int]:
    """Sections in file order, then routes by index; stable within one route."""
    path = problem[0]
    head = re.match(r"[A-Za-z_]+", path)
    rank = _SECTIONS.get(head.group(0) if head else "", 4)
    index = re.match(r"routes\[(\d+)\]", path)
    return rank, int(index.group(1)) if index else -1


def check_kafka_fits(
    kafka: KafkaConfig, server: ServerConfig, index: int, route: RouteConfig
) -> list[tuple[str, str]]:
    """A body hookd accepts must fit in one Kafka record: a 2xx for an event the producer
    would refuse (or a spooled one it could never forward) breaks the guarantee."""
    limit = int(kafka.extra.get("message.max.bytes", KAFKA_MESSAGE_MAX_BYTES))
    allowed = limit - RECORD_OVERHEAD_BYTES
    body = route.max_body_bytes or server.max_body_bytes
    if body <= allowed:
        return []
    key = f"routes[{index}].max_body_bytes" if route.max_body_bytes else "server.max_body_bytes"
    return [
        (
            key,
            f"{body} does not fit in a Kafka record: at most {allowed} (message.max.bytes {limit} "
            f'less {RECORD_OVERHEAD_BYTES} for key and headers); raise "message.max.bytes" in '
            "[kafka.extra] and the topic's max.message.bytes, or lower this",
        )
    ]


def check_respond_within(
    kafka: KafkaConfig, index: int, route: RouteConfig
) -> list[tuple[str, str]]:
    """A route's own ``respond_within_s`` may not exceed ``kafka.ack_timeout_s``: Kafka's own
    timeout would answer first, so the setting would promise what hookd does not do. Refused
    rather than warned about: a config error names its key, and ``hookd check`` shows it."""
    within, ack_timeout = route.respond_within_s, kafka.ack_timeout_s
    if within is None or within <= ack_timeout:
        return []
    return [
        (
            f"routes[{index}].respond_within_s",
            f"{within:g} is longer than kafka.ack_timeout_s ({ack_timeout:g}), which answers "
            "first; lower it or raise ack_timeout_s",
        )
    ]


def respond_within_s(
    route: RouteConfig, scheme_default: float | None, ack_timeout_s: float
) -> float:
    """How long after its request head arrived a request on ``route`` must be answered.

    The route's own ``respond_within_s`` when set (``validate`` keeps it within
    ``ack_timeout_s``); else its scheme's default, a margin under the provider's documented
    delivery timeout (docs/providers.md), capped at ``ack_timeout_s`` because Kafka's own
    timeout answers by then anyway; else, where the provider documents none, ``ack_timeout_s``.
    """
    if route.respond_within_s is not None:
        return route.respond_within_s
    if scheme_default is None:
        return ack_timeout_s
    return min(scheme_default, ack_timeout_s)


def read_toml(file: Path) -> dict[str, Any]:
    """A config file's TOML, unvalidated; ``ConfigError`` if it cannot be read or parsed."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([(str(file), f"cannot read: {exc.strerror or exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(file), f"invalid TOML: {exc}")]) from None


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ``ConfigError`` naming every problem."""
    file = Path(path)
    return validate(read_toml(file), os.environ if env is None else env, base=file.parent)
