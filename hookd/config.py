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
from typing import Any

from pydantic import BaseModel, ValidationError

from hookd.net import allow
from hookd.settings import (
    CREDENTIAL_HEADER_WORDS,
    DEFAULT_BROKER,
    FIXED_PRODUCER_SETTINGS,
    KAFKA_MESSAGE_MAX_BYTES,
    QUIX_BROKER_ADDRESS_ENV,
    QUIX_SDK_TOKEN_ENV,
    RECORD_OVERHEAD_BYTES,
    Config,
    ConfigError,
    HostPort,
    KafkaConfig,
    RouteConfig,
    ServerConfig,
    SpoolConfig,
    key_path,
    parse_host_port,
    reason_of,
)
from hookd.verify import SCHEMES

#: The models are :mod:`hookd.settings`'; most callers know them as this module's.
__all__ = [
    "CREDENTIAL_HEADER_WORDS",
    "DEFAULT_BROKER",
    "FIXED_PRODUCER_SETTINGS",
    "KAFKA_MESSAGE_MAX_BYTES",
    "QUIX_BROKER_ADDRESS_ENV",
    "QUIX_SDK_TOKEN_ENV",
    "RECORD_OVERHEAD_BYTES",
    "Config",
    "ConfigError",
    "HostPort",
    "KafkaConfig",
    "RouteConfig",
    "ServerConfig",
    "SpoolConfig",
    "TopicSettings",
    "check_scheme",
    "load",
    "parse_host_port",
    "read_toml",
    "respond_within_s",
    "route_topic_settings",
    "topic_settings",
    "topic_warnings",
    "validate",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FILE_PREFIX = "file:"


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
        problems += [(key_path(error["loc"]), reason_of(error)) for error in exc.errors()]
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

    def section(model: type[BaseModel], value: Any) -> Any:
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
