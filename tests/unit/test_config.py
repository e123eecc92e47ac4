"""Config loading: expansion, defaults, and one named problem per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

import hookd
from hookd.cli import main
from hookd.config import ConfigError, load, parse_host_port, validate
from hookd.routing import build_routes

ROUTE = {"path": "/gh", "topic": "t", "verify": "github", "secrets": ["s"]}


def problems(raw: dict, env: dict | None = None, base: Path = Path()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(raw, env or {}, base)
    return info.value.lines()


def test_defaults_match_the_documented_contract():
    config = validate({"routes": [ROUTE]}, {})
    server = config.server
    assert (server.listen, server.admin_listen, server.workers) == (
        "0.0.0.0:8080",
        "127.0.0.1:9090",
        1,
    )
    assert (server.max_body_bytes, server.max_header_bytes, server.max_connections) == (
        983_040,
        16_384,
        10_000,
    )
    assert (server.header_timeout_s, server.body_timeout_s, server.idle_timeout_s) == (10, 30, 75)
    assert (config.kafka.ack_timeout_s, config.kafka.linger_ms) == (8, 2)
    assert config.routes[0].ack == "kafka"


def test_env_expansion_with_and_without_default():
    raw = {
        "kafka": {"broker_address": "${BROKER:-127.0.0.1:9092}"},
        "routes": [{**ROUTE, "topic": "${TOPIC}", "secrets": ["${A}", "x${B:-b}y"]}],
    }
    config = validate(raw, {"TOPIC": "events", "A": "alpha"})
    assert config.kafka.broker_address == "127.0.0.1:9092"
    assert config.routes[0].topic == "events"
    assert config.routes[0].secrets == ("alpha", "xby")


def test_missing_variable_names_key_and_variable():
    lines = problems({"routes": [{**ROUTE, "secrets": ["${GITHUB_SECRET}"]}]})
    assert lines == [
        "config error: routes[0].secrets[0]: environment variable ${GITHUB_SECRET} is not set"
    ]


def test_every_problem_reported_once_with_its_key_path():
    raw = {
        "server": {"listen": "nonsense", "bogus": 1, "max_body_bytes": 0},
        "kafka": {"acks_timeout_s": 3},
        "routes": [{**ROUTE, "ack": "maybe"}],
    }
    lines = problems(raw)
    assert "config error: server.listen: expected HOST:PORT, got 'nonsense'" in lines
    assert "config error: server.bogus: unknown key" in lines
    assert "config error: kafka.acks_timeout_s: unknown key" in lines
    assert any(line.startswith("config error: server.max_body_bytes: ") for line in lines)
    assert any(line.startswith("config error: routes[0].ack: ") for line in lines)
    assert len(lines) == 5


def test_duplicate_paths():
    lines = problems({"routes": [ROUTE, {**ROUTE, "topic": "other"}]})
    assert lines == ["config error: routes[1].path: duplicate of routes[0]"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("8080", "expected HOST:PORT"),
        ("host:", "expected HOST:PORT"),
        ("host:99999", "out of range"),
        (":80", "expected HOST:PORT"),
    ],
)
def test_bad_listen(value, reason):
    [line] = problems({"server": {"listen": value}, "routes": [ROUTE]})
    assert line.startswith("config error: server.listen: ") and reason in line


def test_ipv6_listen():
    address = parse_host_port("[::1]:8080")
    assert (address.host, address.port, str(address)) == ("::1", 8080, "[::1]:8080")


def test_route_path_and_key_rule_are_validated():
    lines = problems({"routes": [{**ROUTE, "path": "gh", "key": "cookie:x"}]})
    assert any(line.startswith("config error: routes[0].path: ") for line in lines)
    assert any(line.startswith("config error: routes[0].key: ") for line in lines)


def test_extra_producer_settings_cannot_weaken_the_guarantee():
    [line] = problems(
        {"kafka": {"extra": {"acks": "1", "compression.type": "lz4"}}, "routes": [ROUTE]}
    )
    assert line.startswith("config error: kafka.extra: acks cannot be set")


def test_file_secrets_are_read_relative_to_the_config(tmp_path):
    (tmp_path / "old").write_text("from-file\n")
    config = validate({"routes": [{**ROUTE, "secrets": ["file:old", "plain"]}]}, {}, tmp_path)
    assert config.routes[0].secrets == ("from-file", "plain")
    [line] = problems({"routes": [{**ROUTE, "secrets": ["file:missing"]}]}, base=tmp_path)
    assert line.startswith("config error: routes[0].secrets[0]: cannot read ")


def test_invalid_toml_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:1"\nworkers = = 2\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    [line] = info.value.lines()
    assert line.startswith(f"config error: {path}: invalid TOML: ")
    assert "line 3" in line


def test_a_config_without_kafka_section_is_valid(tmp_path):
    path = tmp_path / "min.toml"
    path.write_text('[[routes]]\npath = "/x"\ntopic = "t"\nverify = "none"\n')
    config = load(path, env={})
    assert config.kafka.broker({}) == "127.0.0.1:9092"
    assert config.kafka.broker({"Quix__Sdk__Token": "sdk-abc"}) is None
    both = {"Quix__Sdk__Token": "sdk-abc", "Quix__Broker__Address": "kafka:9092"}
    assert config.kafka.broker(both) == "kafka:9092"  # quixstreams leaves Quix mode for it


def test_overrides_are_validated_and_keep_the_rest():
    config = validate({"routes": [ROUTE], "spool": {"path": "/var/spool/hookd"}}, {})
    changed = config.with_overrides(listen="127.0.0.1:1234", workers=1, broker="b:9")
    assert (changed.server.listen, changed.kafka.broker_address) == ("127.0.0.1:1234", "b:9")
    assert changed.routes == config.routes
    assert changed.spool == config.spool
    with pytest.raises(ConfigError) as info:
        config.with_overrides(listen="nope")
    assert info.value.lines()[0].startswith("config error: server.listen: ")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hookd.toml"
    path.write_text(text)
    return str(path)


def test_check_prints_routes_with_secrets_redacted(tmp_path, capsys):
    path = write(
        tmp_path,
        '[[routes]]\npath = "/gh"\ntopic = "t"\nverify = "github"\n'
        'secrets = ["very-secret-value", "other-secret"]\n',
    )
    assert main(["check", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "route /gh -> topic t: verify=github secrets=[***, ***]" in out
    assert "forward_headers=[x-github-hook-id, x-github-hook-installation-target-id" in out
    assert out.rstrip().endswith("forward_query=false")
    assert "very-secret-value" not in out and "other-secret" not in out


def test_check_exits_2_with_one_line_per_problem(tmp_path, capsys):
    # one pass: the routes' scheme problems come with the [server] field errors (issue 14)
    path = write(
        tmp_path,
        '[server]\nlisten = "x"\nunknown = 1\n'
        '[[routes]]\npath = "/a"\ntopic = "t"\nverify = "nosuch"\n'
        '[[routes]]\npath = "/b"\ntopic = "t"\nverify = "github"\n',
    )
    assert main(["check", "--config", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4
    assert err[:2] == [
        "config error: server.listen: expected HOST:PORT, got 'x'",
        "config error: server.unknown: unknown key",
    ]
    assert err[2].startswith('config error: routes[0].verify: unknown scheme "nosuch"')
    assert err[3] == 'config error: routes[1].secrets: scheme "github" needs at least one secret'


def test_every_problem_of_a_file_in_one_pass(tmp_path, capsys):
    # Issue 14: a file with five problems reported three; tolerance_s on a github route and
    # a duplicate path appeared only after the others were fixed.
    path = write(
        tmp_path,
        "[server]\nmax_body_bytes = 0\n"
        '[kafka]\nack_timeout_s = "soon"\n'
        '[[routes]]\npath = "/gh"\ntopic = "gh"\nverify = "github"\nsecrets = ["s"]\n'
        "tolerance_s = 30\n"
        '[[routes]]\npath = "/gh"\ntopic = "gh"\nverify = "stripe"\nsecrets = ["whsec_x"]\n'
        'ack = "spool"\n'
        '[[routes]]\npath = "/x"\ntopic = "t"\nverify = "github"\nsecrets = ["s"]\n'
        'ack = "maybe"\npublic_url = "https://example.com/x"\n'
        '[[routes]]\npath = "/y"\ntopic = "t"\nverify = "twilio"\nsecrets = ["s"]\n'
        "tolerance_s = 5\nbogus = 1\n",
    )
    assert main(["check", "--config", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    paths = [line.removeprefix("config error: ").split(": ")[0] for line in err]
    assert paths == [
        "server.max_body_bytes",
        "kafka.ack_timeout_s",
        "routes[0].tolerance_s",  # found only once the rest was fixed, before
        "routes[1].path",  # the duplicate, too
        "routes[1].ack",
        "routes[2].ack",
        "routes[2].public_url",  # checked with its route's invalid ack left out
        "routes[3].bogus",
        "routes[3].tolerance_s",
        "routes[3].public_url",  # twilio needs one
    ]
    assert 'config error: routes[0].tolerance_s: scheme "github" has no timestamp' in err
    assert "config error: routes[1].path: duplicate of routes[0]" in err
    assert 'config error: routes[1].ack: ack = "spool" needs a [spool] section' in err


def test_every_scheme_problem_of_a_route_at_once():
    route = {**ROUTE, "secrets": [], "tolerance_s": 5, "public_url": "https://x", "prefix": "p"}
    assert problems({"routes": [route]}) == [
        'config error: routes[0].secrets: scheme "github" needs at least one secret',
        'config error: routes[0].tolerance_s: scheme "github" has no timestamp',
        'config error: routes[0].prefix: not used by scheme "github"',
        'config error: routes[0].public_url: not used by scheme "github"',
    ]


def test_check_warns_about_unverified_routes(tmp_path, capsys):
    path = write(tmp_path, '[[routes]]\npath = "/open"\ntopic = "t"\nverify = "none"\n')
    assert main(["check", "--config", path]) == 0
    assert (
        'WARNING: routes[0].verify: accepts unsigned requests (verify = "none")'
        in capsys.readouterr().err
    )


def test_missing_config_file(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_empty_secret_is_refused():
    # A variable that is set but empty must not turn into a secret anyone can sign with.
    lines = problems({"routes": [{**ROUTE, "secrets": ["real", "${EMPTY}"]}]}, {"EMPTY": ""})
    assert lines == [
        "config error: routes[0].secrets: "
        "an empty secret would accept anything (is a variable empty?)"
    ]


@pytest.mark.parametrize(
    ("verify", "secret", "reason"),
    [
        ("basic", "hooks:${LEGACY_PASSWORD}", "empty password"),
        ("stripe", "whsec_${LEGACY_PASSWORD}", 'nothing after the public "whsec_" prefix'),
        ("svix", "whsec_${LEGACY_PASSWORD}", "the base64 key after whsec_ is empty"),
        ("paddle", "pdl_ntfset_${LEGACY_PASSWORD}", "nothing after the public"),
    ],
)
def test_check_refuses_a_secret_whose_material_is_empty(
    tmp_path, capsys, monkeypatch, verify, secret, reason
):
    # Issue 12, finding 5: the variable is set but empty; the string is not, its key is.
    monkeypatch.setenv("LEGACY_PASSWORD", "")
    path = write(
        tmp_path,
        f'[[routes]]\npath = "/a"\ntopic = "t"\nverify = "{verify}"\nsecrets = ["{secret}"]\n',
    )
    assert main(["check", "--config", path]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"config error: routes[0].secrets[0]: {reason}")
    assert line.endswith("an empty secret would accept anything (is a variable empty?)")


def test_tls_cert_and_key_go_together():
    [line] = problems({"server": {"tls_cert": "/etc/hookd/cert.pem"}, "routes": [ROUTE]})
    assert line == "config error: server: tls_cert and tls_key go together"


def test_bodies_must_fit_in_a_kafka_record():
    # 26 MB would be answered 2xx and then refused by the producer (or stuck in the spool)
    [line] = problems({"routes": [{**ROUTE, "max_body_bytes": 26_214_400}]})
    assert line.startswith("config error: routes[0].max_body_bytes: 26214400 does not fit")
    [line] = problems({"server": {"max_body_bytes": 1_048_576}, "routes": [ROUTE]})
    assert line.startswith("config error: server.max_body_bytes: 1048576 does not fit")
    raised = {"message.max.bytes": 30_000_000}
    config = validate(
        {"kafka": {"extra": raised}, "routes": [{**ROUTE, "max_body_bytes": 26_214_400}]}, {}
    )
    assert config.routes[0].max_body_bytes == 26_214_400


def within(verify: str, kafka: dict | None = None, **route: object) -> float:
    """The respond_within_s a route gets, built the way hookd builds it."""
    options = {"public_key": ["d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"]}
    signing = options if verify == "discord" else {"secrets": ["whsec_c2VjcmV0"]}
    raw = {"kafka": kafka or {}, "routes": [{"path": "/x", "topic": "t", "verify": verify}]}
    raw["routes"][0].update(signing, **route)
    return build_routes(validate(raw, {})).routes[0].respond_within_s


def test_respond_within_s_defaults_from_the_scheme_under_the_ack_timeout():
    # a margin under the provider's documented timeout (docs/providers.md)
    assert within("slack") == within("zoom") == within("discord") == 2.5  # 3 s
    assert within("shopify") == within("paddle") == 4.0  # 5 s
    assert within("github") == 8.0  # 10 s, and the default ack_timeout_s is 8
    # no documented timeout: the ack timeout; a longer default: capped by it
    assert within("stripe") == within("segment") == within("hmac", header="x-sig") == 8.0
    assert within("standard-webhooks") == 8.0  # Svix's 15 s → 12, capped at 8
    assert within("standard-webhooks", {"ack_timeout_s": 20}) == 12.0
    assert within("stripe", {"ack_timeout_s": 20}) == 20.0
    assert within("github", {"ack_timeout_s": 3}) == 3.0


def test_respond_within_s_can_be_set_per_route():
    assert within("slack", respond_within_s=1.5) == 1.5
    assert within("stripe", respond_within_s=8) == 8.0  # up to the ack timeout, inclusive


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (0, "config error: routes[0].respond_within_s: Input should be greater than 0"),
        (-2, "config error: routes[0].respond_within_s: Input should be greater than 0"),
        (
            9.5,
            "config error: routes[0].respond_within_s: 9.5 is longer than kafka.ack_timeout_s "
            "(8), which answers first; lower it or raise ack_timeout_s",
        ),
    ],
)
def test_a_bad_respond_within_s_is_refused_with_its_key(value, line):
    assert problems({"routes": [{**ROUTE, "respond_within_s": value}]}) == [line]


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hookd {hookd.__version__}"


@pytest.mark.parametrize(
    "topic", ["gh events!", "", ".", "..", "a" * 250, "événements", "gh/events", "gh:events"]
)
def test_a_topic_name_kafka_refuses_is_refused(topic):
    [line] = problems({"routes": [{**ROUTE, "topic": topic}]})
    assert line.startswith("config error: routes[0].topic: ")


@pytest.mark.parametrize("topic", ["gh-events", "a" * 249, "gh.events", "GH_events-2", "..."])
def test_kafka_topic_names_are_accepted(topic):
    assert validate({"routes": [{**ROUTE, "topic": topic}]}, {}).routes[0].topic == topic


def test_topics_that_collide_in_kafka_metric_names_are_refused():
    lines = problems(
        {"routes": [{**ROUTE, "topic": "gh.events"}, {**ROUTE, "path": "/b", "topic": "gh_events"}]}
    )
    assert lines == [
        "config error: routes[1].topic: 'gh_events' collides with 'gh.events' (routes[0].topic): "
        "Kafka treats '.' and '_' alike in metric names and refuses the second"
    ]


def test_check_refuses_the_topic_name_of_issue_14(tmp_path, capsys):
    path = write(
        tmp_path,
        '[[routes]]\npath = "/gh"\ntopic = "gh events!"\nverify = "github"\nsecrets = ["s"]\n',
    )
    assert main(["check", "--config", path]) == 2
    assert capsys.readouterr().err.startswith("config error: routes[0].topic: 'gh events!' is not")


def check_warnings(tmp_path, capsys, routes: str) -> list[str]:
    assert main(["check", "--config", write(tmp_path, routes)]) == 0
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING")]


def test_check_warns_on_secrets_that_do_not_look_like_the_providers(tmp_path, capsys):
    route = '[[routes]]\npath = "{p}"\ntopic = "t"\nverify = "{v}"\nsecrets = ["{s}"]\n'
    text = "".join(
        route.format(p=f"/{n}", v=v, s=s)
        for n, (v, s) in enumerate(
            [
                ("stripe", "sk_live_51Habcdefghijklmnop"),  # the classic paste error
                ("stripe", "not-a-webhook-secret"),
                ("stripe", "whsec_fine"),
                ("shopify", "shpat_0123456789abcdef"),
                ("slack", "xoxb-1234-5678"),
                ("paddle", "pdl_ntfset_fine"),
                ("github", "anything goes"),
            ]
        )
    )
    lines = check_warnings(tmp_path, capsys, text)
    assert lines == [
        'WARNING: routes[0].secrets[0]: starts with "sk_live_" like a Stripe secret API key, '
        "not a webhook signing secret",
        'WARNING: routes[1].secrets[0]: does not start with "whsec_" as stripe webhook signing '
        "secrets do",
        'WARNING: routes[3].secrets[0]: starts with "shpat_" like a Shopify Admin API access '
        "token, not a webhook signing secret",
        'WARNING: routes[4].secrets[0]: starts with "xoxb-" like a Slack bot token, not a '
        "webhook signing secret",
    ]
    assert "51Habcdefghijklmnop" not in "".join(lines)  # no more of a secret than its prefix


def test_check_warns_on_topic_names_mixing_dot_and_underscore(tmp_path, capsys):
    lines = check_warnings(
        tmp_path,
        capsys,
        '[[routes]]\npath = "/a"\ntopic = "shop.orders_v2"\nverify = "github"\nsecrets = ["s"]\n',
    )
    assert lines == [
        "WARNING: routes[0].topic: 'shop.orders_v2' mixes '.' and '_', which collide in Kafka's "
        "metric names; use one of them"
    ]


def test_serve_logs_the_warnings_at_start(tmp_path, monkeypatch, capfd):
    # hookd serve: the warnings are logged before anything else starts
    import hookd.workers

    path = write(
        tmp_path,
        '[[routes]]\npath = "/s"\ntopic = "t"\nverify = "stripe"\nsecrets = ["sk_test_x"]\n',
    )
    monkeypatch.setattr(hookd.workers, "serve", lambda config, reread: 0)
    assert main(["serve", "--config", path]) == 0
    err = capfd.readouterr().err
    assert 'WARNING hookd config warning: routes[0].secrets[0]: starts with "sk_test_"' in err


def test_topic_settings_from_kafka_with_route_overrides():
    from hookd.config import topic_settings

    kafka = {"create_topics": True, "topic_partitions": 6, "topic_replication_factor": 3}
    routes = [
        ROUTE,
        {**ROUTE, "path": "/b", "topic": "big", "topic_partitions": 12},
        {**ROUTE, "path": "/c", "topic": "big", "topic_partitions": 12},  # same topic, agrees
    ]
    config = validate({"kafka": kafka, "routes": routes}, {})
    assert topic_settings(config) == {"t": (6, 3), "big": (12, 3)}
    assert topic_settings(validate({"routes": [ROUTE]}, {})) == {"t": (None, None)}
    assert validate({"routes": [ROUTE]}, {}).kafka.create_topics is True


def test_routes_of_one_topic_must_agree_on_its_settings():
    routes = [ROUTE, {**ROUTE, "path": "/b", "topic_replication_factor": 3}]
    assert problems({"routes": routes}) == [
        "config error: routes[1].topic_replication_factor: topic 't' is created with other "
        "settings by routes[0]: routes of one topic must agree"
    ]


@pytest.mark.parametrize("key", ["topic_partitions", "topic_replication_factor"])
def test_topic_settings_are_positive(key):
    [line] = problems({"kafka": {key: 0}, "routes": [ROUTE]})
    assert line == f"config error: kafka.{key}: Input should be greater than 0"
