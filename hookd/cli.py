"""``hookd serve | check | sign``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path

from hookd.config import Config, ConfigError, load
from hookd.logs import configure as configure_logging
from hookd.routing import RouteTable, build_routes
from hookd.verify import CannotSign

EXIT_CONFIG = 2
SAMPLE_BODY = b'{"type":"track","event":"hookd test","properties":{"source":"hookd sign"}}'


def _config_path(value: str | None) -> str:
    path = value or os.environ.get("HOOKD_CONFIG")
    if not path:
        raise ConfigError([("--config", "no config file given (--config FILE or $HOOKD_CONFIG)")])
    return path


def _load(args: argparse.Namespace) -> tuple[Config, RouteTable]:
    config = load(_config_path(args.config))
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
    from hookd.app import StartupError, serve  # heavy imports only when serving

    path = _config_path(args.config)

    def read() -> Config:
        return load(path).with_overrides(
            listen=args.listen, workers=args.workers, broker=args.broker
        )

    config = read()
    try:
        return serve(config, reread=read)
    except StartupError as exc:
        logging.getLogger("hookd").error("cannot start: %s", exc)
        return 1


def cmd_check(args: argparse.Namespace) -> int:
    config, routes = _load(args)
    print(f"listen {config.server.listen}, admin {config.server.admin_listen}")
    broker = config.kafka.broker(os.environ) or "Quix Cloud (Quix__Sdk__Token)"
    print(f"kafka {broker}, ack_timeout_s {config.kafka.ack_timeout_s}")
    for route in routes.routes:
        secrets = ", ".join("***" for _ in route.config.secrets) or "-"
        print(
            f"route {route.path} -> topic {route.topic}: verify={route.scheme} secrets=[{secrets}]"
            f" key={route.config.key or 'delivery id'} max_body_bytes={route.max_body_bytes}"
        )
        if route.scheme == "none":
            print(
                f'WARNING: route {route.path} accepts unsigned requests (verify = "none")',
                file=sys.stderr,
            )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    config, routes = _load(args)
    route = routes.lookup(args.route.encode())
    if route is None:
        known = ", ".join(r.path for r in routes.routes)
        print(f"error: no route {args.route!r} (routes: {known})", file=sys.stderr)
        return EXIT_CONFIG
    if args.body is None:
        body = SAMPLE_BODY
    elif args.body == "-":
        body = sys.stdin.buffer.read()
    else:
        body = Path(args.body).read_bytes()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        print("error: hookd sign needs a UTF-8 body to print it in a command", file=sys.stderr)
        return EXIT_CONFIG
    try:
        headers = route.verifier.sign(body, route.path_bytes, time.time())
    except CannotSign as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    listen = config.server.listen_address
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host
    url = (
        f"http://{host}:{listen.port}{route.path}"
        if ":" not in host
        else f"http://[{host}]:{listen.port}{route.path}"
    )
    parts = ["curl", "-sS", "-i", "-X", "POST", url, "-H", "Content-Type: application/json"]
    for name, value in headers:
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-binary", text]
    print(" ".join(shlex.quote(part) for part in parts))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hookd", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="receive webhooks and publish them")
    serve.add_argument("--config", help="TOML config (default: $HOOKD_CONFIG)")
    serve.add_argument("--listen", help="HOST:PORT, overrides server.listen")
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
    check.add_argument("--config", help="TOML config (default: $HOOKD_CONFIG)")
    check.set_defaults(run=cmd_check)
    sign = sub.add_parser("sign", help="print a curl command that the route accepts")
    sign.add_argument("--config", help="TOML config (default: $HOOKD_CONFIG)")
    sign.add_argument("--route", required=True, help="the route's path, e.g. /segment")
    sign.add_argument("--body", help="body file, or - for stdin (default: a sample JSON event)")
    sign.set_defaults(run=cmd_sign)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(getattr(args, "log_format", "text"))

    try:
        return args.run(args)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
