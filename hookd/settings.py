"""The configuration's shape: a frozen pydantic model per section and the rules one field or
one section checks on its own (what a value may be).

Loading the file, ``${VAR}`` expansion, ``file:`` secrets and the rules across sections and
schemes are :mod:`hookd.config`'s; the verifiers read :class:`RouteConfig` from here, so that
``hookd.config`` can check each route's options against its scheme without an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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
            raise ConfigError([(key_path(e["loc"]), reason_of(e)) for e in exc.errors()]) from None
        return self.model_copy(update={"server": settings.server, "kafka": settings.kafka})


def key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def reason_of(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
