"""``hookd serve | check | sign | send | spool``."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import shlex
import signal
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookd import __version__
from hookd.config import Config, ConfigError, load, validate
from hookd.logs import configure as configure_logging
from hookd.routing import Route, RouteTable, build_routes, config_warnings
from hookd.verify import SCHEMES, CannotSign

EXIT_CONFIG = 2
#: ``hookd spool export``'s encoding (hookd.spool_tool.record_json writes it).
EXPORT_ENCODING_HELP = (
    "One JSON object per line: index, seq, topic, key, value, timestamp_ms, headers (a list of "
    "{name, value}), and for dead letters reason and set_aside_ms. Every byte string (key, "
    'value, a header\'s name or value) is written as "F": "<text>" when its bytes are valid '
    'UTF-8, and otherwise as "F_b64": "<standard base64 with padding>" instead; exactly one '
    'of the two is present. A record without a key has "key": null. Encoding "F" as UTF-8, '
    'or decoding "F_b64" as base64, gives back the exact bytes. Lines are UTF-8.'
)


CONFIG_HELP = "TOML config file (default: $HOOKD_CONFIG_TOML's text, else $HOOKD_CONFIG)"


#: The whole config as TOML text, for platforms where a deployment variable is easier to
#: change than a file (Quix Cloud): used instead of $HOOKD_CONFIG's file when set, not
#: instead of --config.
CONFIG_TOML_ENV = "HOOKD_CONFIG_TOML"


@dataclass(frozen=True)
class ConfigSource:
    """Where the config comes from: a file, or the text of ``$HOOKD_CONFIG_TOML``. Read
    again on each ``load`` (SIGHUP): the file, or the same text, with its ``file:`` secrets
    and ``allow_from`` lists read anew (relative to the working directory for the text)."""

    path: str | None = None
    text: str | None = None

    def __str__(self) -> str:
        return f"${CONFIG_TOML_ENV}" if self.text is not None else str(self.path)

    def load(self) -> Config:
        if self.text is None:
            assert self.path is not None
            return load(self.path)
        return validate(self._parse(), os.environ, base=Path.cwd())

    def spool_settings(self) -> Config:
        """The ``[spool]`` and ``[kafka]`` sections only (``hookd spool``)."""
        from hookd import spool_tool

        if self.text is None:
            assert self.path is not None
            return spool_tool.load_settings(self.path)
        return spool_tool.settings_from(self._parse(), os.environ, Path.cwd())

    def _parse(self) -> dict[str, Any]:
        assert self.text is not None
        try:
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([(str(self), f"invalid TOML: {exc}")]) from None


def config_source(value: str | None, env: Mapping[str, str] | None = None) -> ConfigSource:
    """``--config FILE``; else ``$HOOKD_CONFIG_TOML`` when set and not blank; else
    ``$HOOKD_CONFIG``."""
    if value:
        return ConfigSource(path=value)
    env = os.environ if env is None else env
    text = env.get(CONFIG_TOML_ENV)
    if text is not None and text.strip():
        return ConfigSource(text=text)
    path = env.get("HOOKD_CONFIG")
    if not path:
        raise ConfigError(
            [
                (
                    "--config",
                    f"no config given (--config FILE, ${CONFIG_TOML_ENV} or $HOOKD_CONFIG)",
                )
            ]
        )
    return ConfigSource(path=path)


def _load(args: argparse.Namespace) -> tuple[Config, RouteTable]:
    config = config_source(args.config).load()
    return config, build_routes(config)


def _silence_dependency_warning() -> None:
    """authlib (through quixstreams) warns about its own httpx import on every start, with an
    "always" filter installed when its module loads; ours goes in front of it."""
    with contextlib.suppress(ImportError):
        import authlib.deprecate  # noqa: F401
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")


def cmd_serve(args: argparse.Namespace) -> int:
    # Start-up can take seconds (broker, topics); a SIGHUP meanwhile must not kill hookd.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _silence_dependency_warning()
    # heavy imports only when serving
    from hookd.startup import StartupError
    from hookd.workers import serve

    source = config_source(args.config)

    def read() -> Config:
        return source.load().with_overrides(
            listen=args.listen,
            workers=args.workers,
            broker=args.broker,
            admin_listen=args.admin_listen,
        )

    config = read()
    if source.text is not None:
        logging.getLogger("hookd").info("config from $%s", CONFIG_TOML_ENV)
    for path, what in config_warnings(config):
        logging.getLogger("hookd").warning("config warning: %s: %s", path, what)
    try:
        return serve(config, reread=read)
    except StartupError as exc:
        logging.getLogger("hookd").error("cannot start: %s", exc)
        return 1


def cmd_check(args: argparse.Namespace) -> int:
    config, routes = _load(args)
    server = config.server
    print(f"listen {server.listen}, admin {server.admin_listen}")
    if server.trusted_proxies or server.proxy_protocol:
        print(
            f"client address: proxy_protocol={str(server.proxy_protocol).lower()} "
            f"trusted_proxies=[{', '.join(server.trusted_proxies)}]"
        )
    broker = config.kafka.broker(os.environ) or "Quix Cloud (Quix__Sdk__Token)"
    print(f"kafka {broker}, ack_timeout_s {config.kafka.ack_timeout_s}")
    for route in routes.routes:
        secrets = ", ".join("***" for _ in route.config.secrets) or "-"
        forward = ", ".join(SCHEMES[route.scheme].forward_headers(route.config)) or "-"
        print(
            f"route {route.path} -> topic {route.topic}: verify={route.scheme} secrets=[{secrets}]"
            f" key={route.config.key or 'delivery id'} max_body_bytes={route.max_body_bytes}"
            f" forward_headers=[{forward}] forward_query={str(route.config.forward_query).lower()}"
            + (
                ""
                if route.config.allow_from is None
                else f" allow_from={len(route.config.allow_from)} networks"
            )
            + (
                ""
                if route.config.expect_every_s is None
                else f" expect_every_s={route.config.expect_every_s:g}"
            )
        )
    for path, what in config_warnings(config):
        print(f"WARNING: {path}: {what}", file=sys.stderr)
    return 0


def _route_and_body(
    args: argparse.Namespace,
) -> tuple[Config, Route, bytes | None] | int:
    """The config, ``--route``'s route and ``--body``'s bytes (``None``: the provider's
    sample); an exit status after saying what is wrong."""
    config, routes = _load(args)
    route = routes.lookup(args.route.encode())
    if route is None:
        known = ", ".join(r.path for r in routes.routes)
        print(f"error: no route {args.route!r} (routes: {known})", file=sys.stderr)
        return EXIT_CONFIG
    if args.body is None:
        return config, route, None
    try:
        body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except OSError as exc:
        print(f"error: cannot read --body {args.body}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    return config, route, body


def cmd_sign(args: argparse.Namespace) -> int:
    from hookd import send

    found = _route_and_body(args)
    if isinstance(found, int):
        return found
    config, route, body = found
    try:
        delivery = send.delivery(route, body=body, event=args.event)
    except CannotSign as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        text = delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        print("error: hookd sign needs a UTF-8 body to print it in a command", file=sys.stderr)
        return EXIT_CONFIG
    parts = ["curl", "-sS", "-i", "-X", "POST", send.default_url(config, route)]
    for name, value in delivery.headers:
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-binary", text]
    print(" ".join(shlex.quote(part) for part in parts))
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """Post ``--count`` deliveries signed as the route's provider signs them; exit 0 when
    every answer is 2xx, 1 otherwise, 2 for a config or route problem."""
    from hookd import send

    found = _route_and_body(args)
    if isinstance(found, int):
        return found
    config, route, body = found
    url = args.url or send.default_url(config, route)
    try:
        sender = send.Sender(url)
    except ValueError as exc:
        print(f"error: --url: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.event is not None and send.default_event(route.scheme) is None:
        print(f"note: {route.scheme} deliveries carry no event type; --event is ignored")
    target = send.target_of(url)
    failed = 0
    try:
        for index in range(1, args.count + 1):
            try:
                delivery = send.delivery(route, body=body, event=args.event, target=target)
            except CannotSign as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            try:
                answer = sender.post(delivery)
            except (OSError, http.client.HTTPException) as exc:
                print(f"{index}/{args.count} error: POST {url}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(send.report_line(index, args.count, delivery, answer), flush=True)
            failed += not 200 <= answer.status < 300
    finally:
        sender.close()
    return 1 if failed else 0


def cmd_spool(args: argparse.Namespace) -> int:
    """``hookd spool status | export | requeue | drain`` (logic in :mod:`hookd.spool_tool`)."""
    from hookd import spool_tool  # light; only drain imports quixstreams, when it runs
    from hookd.publish import segments

    config = config_source(args.config).spool_settings()
    try:
        directory = spool_tool.spool_root(config)
        if args.spool_command == "status":
            spools = spool_tool.status(directory)
            now_ms = int(time.time() * 1000)
            if args.json:
                print(json.dumps(spool_tool.status_json(directory, spools, now_ms), indent=2))
            else:
                sys.stdout.write(spool_tool.status_table(directory, spools, now_ms))
            return 0
        indexes = spool_tool.selected_indexes(directory, args.index)
        if args.spool_command == "export":
            return _spool_export(directory, indexes, args.dead_letters)
        if args.spool_command == "requeue":
            return _spool_requeue(directory, config, indexes, args.seq)
        return _spool_drain(directory, config, indexes, args.connect_timeout)
    except spool_tool.ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, segments.SpoolError) as exc:  # permissions, a full disk, a bad file
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _spool_export(directory: Path, indexes: list[int], dead: bool) -> int:
    from hookd import spool_tool

    for legacy in spool_tool.legacy_paths(directory, indexes):
        print(
            f"note: {legacy} (SQLite, from before the log) is not exported; "
            "hookd converts it into the log at its next start",
            file=sys.stderr,
        )
    out = sys.stdout.buffer
    try:
        for obj in spool_tool.export_objects(directory, indexes, dead=dead):
            out.write(spool_tool.export_line(obj).encode("utf-8"))
        out.flush()
    except BrokenPipeError:  # `| head`: the reader had enough
        with contextlib.suppress(OSError):  # and Python's flush at exit must not complain
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _spool_requeue(
    directory: Path, config: Config, indexes: list[int], seqs: list[int] | None
) -> int:
    from hookd import spool_tool
    from hookd.publish import segments

    assert config.spool is not None
    report = spool_tool.requeue(directory, config.spool.max_bytes, indexes, seqs)
    if report.index is None:
        wanted = "" if seqs is None else f" with seq {', '.join(map(str, seqs))}"
        print(f"no dead letters{wanted} to requeue")
        return 1 if seqs else 0
    if report.requeued:
        print(
            f"requeued {len(report.requeued)} dead letters into spool-{report.index} "
            f"({segments.spool_dir(directory, report.index)}): a running hookd forwards it "
            "within seconds, a stopped one at its next start"
        )
    if seqs:
        missing = sorted(set(seqs) - {seq for _, seq in report.requeued})
        if missing:
            print(f"no dead letter with seq {', '.join(map(str, missing))}", file=sys.stderr)
    if report.error is not None:
        print(f"error: {report.error}", file=sys.stderr)
        return 1
    return 0


def _spool_drain(directory: Path, config: Config, indexes: list[int], timeout: float | None) -> int:
    from hookd import spool_tool

    _silence_dependency_warning()
    from hookd.publish.cluster import KafkaCluster  # heavy: quixstreams

    report = spool_tool.drain(
        directory,
        config,
        indexes,
        cluster=KafkaCluster(config),
        connect_timeout_s=timeout or config.kafka.connect_timeout_s,
    )
    for line in spool_tool.drain_lines(report):
        print(line)
    return 1 if report.left else 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hookd", description=__doc__)
    top.add_argument("--version", action="version", version=f"hookd {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="receive webhooks and publish them")
    serve.add_argument("--config", help=CONFIG_HELP)
    serve.add_argument("--listen", help="HOST:PORT, overrides server.listen")
    serve.add_argument("--admin-listen", help="HOST:PORT, overrides server.admin_listen")
    serve.add_argument("--workers", type=int, help="overrides server.workers")
    serve.add_argument("--broker", help="Kafka bootstrap address, overrides kafka.broker_address")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("HOOKD_LOG_FORMAT", "text"),
        help="stderr log lines as text or JSON (default: $HOOKD_LOG_FORMAT or text)",
    )
    serve.set_defaults(run=cmd_serve)
    check = sub.add_parser("check", help="validate a config and print the route table")
    check.add_argument("--config", help=CONFIG_HELP)
    check.set_defaults(run=cmd_check)
    sign = sub.add_parser("sign", help="print a curl command that the route accepts")
    sign.add_argument("--config", help=CONFIG_HELP)
    sign.add_argument("--route", required=True, help="the route's path, e.g. /segment")
    sign.add_argument(
        "--body", help="body file, or - for stdin (default: the provider's sample event)"
    )
    sign.add_argument("--event", help="the event type (default: the provider's sample's)")
    sign.set_defaults(run=cmd_sign)
    send = sub.add_parser(
        "send",
        help="post deliveries signed as the route's provider signs them",
        description="Post --count deliveries to the route, each as its provider sends it: "
        "the provider's sample body (or --body), a fresh delivery id, the event type, "
        "timestamp headers and the signature, one per configured secret where the provider's "
        "header carries several. Prints status, answer and time per request. Exit status: 0 "
        "every answer 2xx, 1 otherwise, 2 config or route problem (asymmetric schemes cannot "
        "be signed).",
    )
    send.add_argument("--config", help=CONFIG_HELP)
    send.add_argument("--route", required=True, help="the route's path, e.g. /github")
    send.add_argument("--event", help="the event type (default: the provider's sample's)")
    send.add_argument(
        "--body",
        help="body file, or - for stdin, sent as is every time (default: a fresh sample "
        "event of the provider's shape per request)",
    )
    send.add_argument(
        "--url", help="where to post (default: the config's listen address + the route path)"
    )
    send.add_argument("--count", type=_positive_int, default=1, help="deliveries (default 1)")
    send.set_defaults(run=cmd_send)
    _spool_parser(sub)
    return top


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return number


def _positive_seconds(value: str) -> float:
    seconds = float(value)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {value}")
    return seconds


def _spool_parser(sub: Any) -> None:
    spool = sub.add_parser(
        "spool",
        help="inspect the spool, export it, requeue dead letters, drain it to the broker",
        description="Work on the spool of [spool] path, while hookd runs or while it is "
        "stopped. Reads only the [spool] and [kafka] sections of the config. Exit status: 0 ok, "
        "1 failure (or records left), 2 config error.",
    )
    tools = spool.add_subparsers(dest="spool_command", required=True)

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = tools.add_parser(name, help=help, description=description)
        parser.add_argument("--config", help=CONFIG_HELP)
        parser.set_defaults(run=cmd_spool)
        return parser

    status = command(
        "status",
        "per spool: depth, bytes, oldest record, dead letters, held by",
        "Per worker index (spool-<n>/): depth (records in the log not yet forwarded: what a "
        "start would forward), bytes of its segment files, age of the oldest record, dead "
        "letters, and the pid of the running hookd that holds it. A spool-<n>.db (SQLite, from "
        "before the log) is listed too: hookd converts it at its next start. Read-only.",
    )
    status.add_argument("--json", action="store_true", help="one JSON document")
    export = command(
        "export",
        "the spool's records (or dead letters) as JSON lines on stdout",
        "Write every record not yet forwarded (or, with --dead-letters, every dead letter) as "
        f"JSON lines on stdout, oldest first per spool. Read-only. {EXPORT_ENCODING_HELP}",
    )
    export.add_argument("--dead-letters", action="store_true", help="export the dead letters")
    export.add_argument("--index", type=int, help="only this worker index's spool")
    requeue = command(
        "requeue",
        "put dead letters back in the queue",
        "Write dead letters (all, or those of --index / --seq) into a new spool of an unused "
        "worker index (>= 1000), then delete their dead-letter files. A "
        "running hookd adopts that spool within about 5 s and forwards it; a stopped one does "
        "at its next start. A crash between the write and the deletes can forward a record "
        "twice, never lose it.",
    )
    requeue.add_argument("--index", type=int, help="only this worker index's dead letters")
    requeue.add_argument(
        "--seq",
        type=int,
        nargs="+",
        action="extend",
        metavar="S",
        help="only the dead letters with these seq numbers, as export --dead-letters shows "
        "them (numbers are per spool: add --index when there are several)",
    )
    drain = command(
        "drain",
        "forward a stopped spool to the broker",
        "Forward the spool of a hookd that will not serve again to the broker of [kafka], "
        "with hookd's producer settings; release only what the broker acknowledged. Refuses a "
        "spool a running hookd holds. Exits 1 when any record is left. Dead letters stay.",
    )
    drain.add_argument(
        "--to-broker", action="store_true", required=True, help="forward to [kafka]'s broker"
    )
    drain.add_argument("--index", type=int, help="only this worker index's spool")
    drain.add_argument(
        "--connect-timeout",
        type=_positive_seconds,
        metavar="S",
        help="give up when the broker does not answer within S seconds "
        "(default: kafka.connect_timeout_s)",
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(getattr(args, "log_format", "text"))

    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
