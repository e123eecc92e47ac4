"""Issue 14's network settings, without sockets: [server] trusted_proxies and proxy_protocol,
route allow_from (inline and file: lists, re-read on reload), --admin-listen, the config in
$HOOKD_CONFIG_TOML, the 404 path in the logs and quoted text log values."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hookd.cli import CONFIG_TOML_ENV, config_source, main, parser
from hookd.config import ConfigError, load, validate
from hookd.logs import MAX_PATH_CHARS, JsonFormatter, TextFormatter, request_path
from hookd.metrics import Metrics
from hookd.routing import build_routes, config_warnings

ROUTE = {"path": "/gh", "topic": "t", "verify": "github", "secrets": ["s"]}
GITHUB_HOOKS = """\
# GitHub's "hooks" ranges, from https://api.github.com/meta
192.30.252.0/22
185.199.108.0/22   # trailing comment
140.82.112.0/20

143.55.64.0/20
2a0a:a440::/29
2606:50c0::/32
"""


def problems(raw: dict, env: dict | None = None, base: Path = Path()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(raw, env or {}, base)
    return info.value.lines()


# -- [server] trusted_proxies, proxy_protocol ----------------------------------------------


def test_client_address_settings_default_off():
    server = validate({"routes": [ROUTE]}, {}).server
    assert server.trusted_proxies == () and server.proxy_protocol is False


def test_trusted_proxies_are_networks_normalised():
    config = validate(
        {"server": {"trusted_proxies": ["10.0.0.0/8", "192.0.2.7", "2001:DB8::/32"]}}, {}
    )
    assert config.server.trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")


def test_trusted_proxies_problems_by_index_in_one_pass():
    lines = problems(
        {
            "server": {"trusted_proxies": ["10.0.0.0/8", "lb.internal", "10.1.2.3/8"]},
            "routes": [{**ROUTE, "allow_from": ["nope"]}],
        }
    )
    assert lines == [
        "config error: server.trusted_proxies[1]: 'lb.internal' is not an IP address or CIDR "
        "network",
        "config error: server.trusted_proxies[2]: '10.1.2.3/8' has host bits set: did you mean "
        "10.0.0.0/8?",
        "config error: routes[0].allow_from[0]: 'nope' is not an IP address or CIDR network",
    ]


def test_proxy_protocol_with_tls_is_refused():
    [line] = problems({"server": {"proxy_protocol": True, "tls_cert": "c.pem", "tls_key": "k.pem"}})
    assert line.startswith("config error: server: proxy_protocol with tls_cert is not supported")


def test_trusting_everyone_is_warned_about():
    config = validate(
        {"server": {"trusted_proxies": ["10.0.0.0/8", "0.0.0.0/0"]}, "routes": [ROUTE]}, {}
    )
    [(path, what)] = config_warnings(config)
    assert path == "server.trusted_proxies[1]" and "trusts every peer" in what


# -- route allow_from ---------------------------------------------------------------------


def test_allow_from_inline_and_files(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "github.txt").write_text(GITHUB_HOOKS)
    config = validate(
        {"routes": [{**ROUTE, "allow_from": ["203.0.113.0/24", "file:lists/github.txt"]}]},
        {},
        tmp_path,
    )
    assert config.routes[0].allow_from == (
        "203.0.113.0/24",
        "192.30.252.0/22",
        "185.199.108.0/22",
        "140.82.112.0/20",
        "143.55.64.0/20",
        "2a0a:a440::/29",
        "2606:50c0::/32",
    )
    route = build_routes(config).routes[0]
    assert route.allows("192.30.253.9") and route.allows("203.0.113.200")
    assert route.allows("2606:50c0::1") and route.allows("::ffff:140.82.115.1")
    assert not route.allows("198.51.100.1") and not route.allows("10.0.0.1")


def test_no_allow_from_allows_everyone():
    route = build_routes(validate({"routes": [ROUTE]}, {})).routes[0]
    assert route.allow is None and route.allows("198.51.100.1")


def test_allow_from_problems_name_the_entry_and_the_line(tmp_path):
    (tmp_path / "bad.txt").write_text("# list\n192.30.252.0/22\n192.30.252.1/22\nexample.com\n")
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe")
    lines = problems(
        {
            "routes": [
                {
                    **ROUTE,
                    "allow_from": [
                        "192.0.2.0/24",
                        "file:bad.txt",
                        "file:empty.txt",
                        "file:missing.txt",
                        "file:",
                        "file:binary.txt",
                    ],
                },
                {**ROUTE, "path": "/b", "allow_from": []},
                {**ROUTE, "path": "/c", "allow_from": ["file:empty.txt"]},
                {**ROUTE, "path": "/d", "allow_from": "10.0.0.0/8"},
            ]
        },
        base=tmp_path,
    )
    assert lines == [
        f"config error: routes[0].allow_from[1]: {tmp_path}/bad.txt line 3: '192.30.252.1/22' "
        "has host bits set: did you mean 192.30.252.0/22?",
        f"config error: routes[0].allow_from[1]: {tmp_path}/bad.txt line 4: 'example.com' is "
        "not an IP address or CIDR network",
        f"config error: routes[0].allow_from[2]: {tmp_path}/empty.txt holds no address or network",
        f"config error: routes[0].allow_from[3]: cannot read {tmp_path}/missing.txt: No such "
        "file or directory",
        "config error: routes[0].allow_from[4]: file: needs a path",
        f"config error: routes[0].allow_from[5]: {tmp_path}/binary.txt is not UTF-8 text",
        "config error: routes[1].allow_from: an empty allow_from refuses every request; leave "
        "it out to accept any address",
        f"config error: routes[2].allow_from[0]: {tmp_path}/empty.txt holds no address or network",
        "config error: routes[3].allow_from: Input should be a valid tuple",
    ]


def test_allow_from_files_are_read_again_by_each_load(tmp_path):
    """What a SIGHUP reload does: load the config again, list files included."""
    (tmp_path / "stripe.txt").write_text("3.18.12.63\n3.130.192.231\n")
    path = tmp_path / "hookd.toml"
    path.write_text(
        '[[routes]]\npath = "/stripe"\ntopic = "t"\nverify = "none"\n'
        'allow_from = ["file:stripe.txt"]\n'
    )
    before = build_routes(load(path)).routes[0]
    assert before.allows("3.18.12.63") and not before.allows("13.235.14.237")
    (tmp_path / "stripe.txt").write_text("3.18.12.63\n13.235.14.237\n")
    after = build_routes(load(path)).routes[0]
    assert after.allows("13.235.14.237") and not after.allows("3.130.192.231")
    (tmp_path / "stripe.txt").write_text("not a list\n")
    with pytest.raises(ConfigError, match=r"routes\[0\].allow_from\[0\]: .*line 1"):
        load(path)


def test_check_prints_the_client_address_settings(tmp_path, capsys):
    (tmp_path / "gh.txt").write_text(GITHUB_HOOKS)
    path = tmp_path / "hookd.toml"
    path.write_text(
        '[server]\ntrusted_proxies = ["10.0.0.0/8"]\nproxy_protocol = true\n\n'
        '[[routes]]\npath = "/gh"\ntopic = "t"\nverify = "github"\nsecrets = ["s"]\n'
        'allow_from = ["file:gh.txt"]\n'
    )
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "client address: proxy_protocol=true trusted_proxies=[10.0.0.0/8]" in out
    assert "allow_from=6 networks" in out


# -- --admin-listen -----------------------------------------------------------------------


def test_admin_listen_override():
    args = parser().parse_args(["serve", "--admin-listen", "0.0.0.0:9191"])
    assert args.admin_listen == "0.0.0.0:9191"
    config = validate({"routes": [ROUTE]}, {})
    changed = config.with_overrides(admin_listen=args.admin_listen)
    assert changed.server.admin_listen == "0.0.0.0:9191"
    assert changed.server.listen == config.server.listen and changed.routes == config.routes
    with pytest.raises(ConfigError, match=r"server.admin_listen: .*expected HOST:PORT"):
        config.with_overrides(admin_listen="9191")


# -- $HOOKD_CONFIG_TOML -------------------------------------------------------------------

TOML = """\
[server]
listen = "0.0.0.0:8080"

[[routes]]
path = "/github"
topic = "${output}"
verify = "github"
secrets = ["${GITHUB_SECRET}"]

[[routes]]
path = "/stripe"
topic = "${output}"
verify = "stripe"
secrets = ["${STRIPE_SECRET}"]
"""
ENV = {"output": "webhooks", "GITHUB_SECRET": "gh", "STRIPE_SECRET": "whsec_x"}


def test_config_toml_variable_is_used_instead_of_hookd_config(monkeypatch, tmp_path):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    source = config_source(None, {CONFIG_TOML_ENV: TOML, "HOOKD_CONFIG": "/etc/hookd/quix.toml"})
    assert source.text == TOML and str(source) == "$HOOKD_CONFIG_TOML"
    config = source.load()
    assert [(r.path, r.topic, r.secrets) for r in config.routes] == [
        ("/github", "webhooks", ("gh",)),
        ("/stripe", "webhooks", ("whsec_x",)),
    ]
    # --config wins; a blank variable is not set
    assert config_source("x.toml", {CONFIG_TOML_ENV: TOML}).path == "x.toml"
    assert config_source(None, {CONFIG_TOML_ENV: " \n", "HOOKD_CONFIG": "f"}).path == "f"
    with pytest.raises(ConfigError, match="--config FILE, \\$HOOKD_CONFIG_TOML or"):
        config_source(None, {})


def test_config_toml_variable_errors_name_it(monkeypatch, capsys):
    monkeypatch.setenv(CONFIG_TOML_ENV, "[[routes]\npath = 1\n")
    monkeypatch.delenv("HOOKD_CONFIG", raising=False)
    assert main(["check"]) == 2
    assert "config error: $HOOKD_CONFIG_TOML: invalid TOML" in capsys.readouterr().err
    monkeypatch.setenv(CONFIG_TOML_ENV, TOML)
    assert main(["check"]) == 2  # ${output} and the secrets are not set
    err = capsys.readouterr().err
    assert "routes[0].topic: environment variable ${output} is not set" in err
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "route /github -> topic webhooks" in out and "route /stripe -> topic webhooks" in out


def test_quix_descriptors_declare_the_config_toml_variable():
    import yaml  # PyYAML is in the [dev] extra

    root = Path(__file__).resolve().parents[2]
    app = yaml.safe_load((root / "app.yaml").read_text())
    [variable] = [v for v in app["variables"] if v["name"] == CONFIG_TOML_ENV]
    assert variable["inputType"] == "FreeText" and not variable.get("required")
    library = json.loads((root / "library.json").read_text())
    [entry] = [v for v in library["Variables"] if v["Name"] == CONFIG_TOML_ENV]
    assert entry["InputType"] == "FreeText" and entry["Required"] is False
    deployment = yaml.safe_load((root / "deploy" / "quix" / "quix.yaml").read_text())
    [hookd] = deployment["deployments"]
    [value] = [v["value"] for v in hookd["variables"] if v["name"] == CONFIG_TOML_ENV]
    env = {
        "output": "github-webhooks",
        "WEBHOOK_SECRET": "gh",
        "STRIPE_WEBHOOK_SECRET": "whsec_x",
        "SHOPIFY_WEBHOOK_SECRET": "shp",
    }
    config = validate(__import__("tomllib").loads(value), env)
    assert {route.verify for route in config.routes} >= {"github", "stripe", "shopify"}
    build_routes(config)


# -- logs ---------------------------------------------------------------------------------


def record(**fields: object) -> logging.LogRecord:
    line = logging.LogRecord("hookd.http", logging.INFO, __file__, 1, "refused", (), None)
    for name, value in fields.items():
        setattr(line, name, value)
    return line


def test_text_log_values_are_quoted():
    line = TextFormatter().format(
        record(status=401, reason="signature mismatch", route="/gh", source_ip="203.0.113.1")
    )
    assert line.endswith(
        ' refused route="/gh" status=401 reason="signature mismatch" source_ip="203.0.113.1"'
    )
    tricky = TextFormatter().format(record(reason='a "quoted" word\nand a line', status=400))
    assert tricky.endswith(r'status=400 reason="a \"quoted\" word\nand a line"')
    assert "\n" not in tricky


def test_request_path_is_sanitised_and_truncated():
    assert request_path(b"/github/?token=secret") == "/github/"
    assert request_path(b"/a b\x00\x1b[31m\\\xff") == "/a\\x20b\\x00\\x1b[31m\\\\\\xff"
    long = request_path(b"/" + b"x" * 500)
    assert long == "/" + "x" * (MAX_PATH_CHARS - 1) + "…"
    escaped = request_path(b"/" + b"\x01" * 100)
    assert len(escaped) <= MAX_PATH_CHARS + 1 and escaped.endswith("…")
    assert "\\x0" not in escaped[-2:]  # never cut inside an escape
    line = JsonFormatter().format(record(path=request_path(b"/gh/\x07"), status=404))
    assert json.loads(line)["path"] == "/gh/\\x07"


def test_client_refusals_are_counted_by_route_and_reason():
    metrics = Metrics()
    metrics.client_refused("/gh", "allow_from")
    metrics.client_refused("/gh", "allow_from")
    metrics.client_refused("-", "proxy_protocol_missing")
    text = metrics.render().decode()
    assert 'hookd_client_refusals_total{route="/gh",reason="allow_from"} 2' in text
    assert 'hookd_client_refusals_total{route="-",reason="proxy_protocol_missing"} 1' in text


def test_operations_worked_example_behind_a_load_balancer_is_valid(tmp_path):
    import re
    import tomllib

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    start = text.index("Worked example: GitHub, Stripe and Shopify behind")
    block = re.search(r"```toml\n(.*?)```", text[start:], re.S)
    assert block is not None
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "github-hooks.txt").write_text(GITHUB_HOOKS)
    (tmp_path / "lists" / "stripe-webhooks.txt").write_text("3.18.12.63\n3.130.192.231\n")
    env = {"GITHUB_SECRET": "gh", "STRIPE_WHSEC": "whsec_x", "SHOPIFY_SECRET": "shp"}
    config = validate(tomllib.loads(block.group(1)), env, tmp_path)
    routes = build_routes(config).routes
    assert [r.scheme for r in routes] == ["github", "stripe", "shopify"]
    assert config.server.trusted_proxies == ("10.20.0.0/16",)
    assert routes[0].allows("192.30.252.1") and not routes[1].allows("192.30.252.1")
    assert routes[2].allow is None
