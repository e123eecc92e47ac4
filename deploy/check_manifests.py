"""Check that deploy/ agrees with itself and with hookd: the Kubernetes manifests and the
Quix Cloud descriptors parse, point at the same ports, names and paths, and their configs
pass ``hookd check``. The Kubernetes part covers the Deployment and its StatefulSet variant
(same pod but for the spool volume, same config but for [spool]), the Services, the
ServiceMonitor and the NetworkPolicy, and the alert rules' spool bound
(deploy/prometheus/alerts.yaml) against the StatefulSet's max_bytes.

    python deploy/check_manifests.py    # needs PyYAML (not a hookd dependency) and hookd

Exit 0 when everything holds, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
problems: list[str] = []


def check(ok: object, message: str) -> None:
    if not ok:
        problems.append(message)


def hookd_check(config_text: str, env: dict[str, str]) -> None:
    hookd = ROOT / ".venv" / "bin" / "hookd"
    command = str(hookd) if hookd.exists() else shutil.which("hookd")
    if command is None:
        problems.append("hookd is not installed: cannot run hookd check")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as file:
        file.write(config_text)
        file.flush()
        run = subprocess.run(
            [command, "check", "--config", file.name],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
    check(run.returncode == 0, f"hookd check failed: {run.stderr.strip()}")


def manifests() -> dict[tuple[str, str], dict]:
    """Every object in deploy/kubernetes/*.yaml by (kind, name)."""
    objects: dict[tuple[str, str], dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                key = (doc["kind"], doc["metadata"]["name"])
                check(key not in objects, f"{path.name}: a second {key[0]} {key[1]}")
                objects[key] = doc
    return objects


def kubernetes() -> None:
    objects = manifests()
    for key in (
        ("Deployment", "hookd"),
        ("Service", "hookd"),
        ("ConfigMap", "hookd-config"),
        ("Secret", "hookd-secrets"),
    ):
        check(key in objects, f"deploy/kubernetes has no {key[0]} {key[1]}")
    deployment, service = objects["Deployment", "hookd"], objects["Service", "hookd"]
    config_map, secret = objects["ConfigMap", "hookd-config"], objects["Secret", "hookd-secrets"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    labels = pod["metadata"]["labels"]

    check(deployment["spec"]["replicas"] == 2, "Deployment: replicas should be 2")
    check(
        deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(),
        "Deployment: selector does not match the pod labels",
    )
    for name, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = container[name]["httpGet"]
        check(probe["path"] == path, f"{name} should GET {path}")
        check(probe["port"] == "admin", f"{name} should use the admin port")
    check(service["spec"]["selector"].items() <= labels.items(), "Service selects no hookd pod")
    targets = [p["targetPort"] for p in service["spec"]["ports"]]
    check(targets == ["http"], f"the public Service must expose only http, not {targets}")
    check([p["port"] for p in service["spec"]["ports"]] == [80], "the Service should listen on 80")

    config_text = config_map["data"]["hookd.toml"]
    config = tomllib.loads(config_text)
    check(
        config["server"]["listen"].endswith(f":{ports['http']}"),
        "ConfigMap server.listen differs from the http containerPort",
    )
    check(
        config["server"]["admin_listen"] == f"0.0.0.0:{ports['admin']}",
        "ConfigMap server.admin_listen must be 0.0.0.0:<admin containerPort> for the probes",
    )
    grace = spec["terminationGracePeriodSeconds"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = config["kafka"]["ack_timeout_s"] + 2
    check(
        grace >= pre_stop + drain + 3,
        f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain {drain} + margin",
    )
    check(spec["securityContext"]["runAsNonRoot"] is True, "pod must run as non-root")
    check(
        container["securityContext"]["readOnlyRootFilesystem"] is True,
        "container root filesystem should be read-only",
    )
    volumes = {v["name"] for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    check(set(mounts) <= volumes, "a volumeMount names no volume")
    check(mounts.get("config") == "/etc/hookd", "the ConfigMap must be mounted at /etc/hookd")
    check(
        container["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"],
        "envFrom does not reference the Secret",
    )
    env_refs = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", config_text))
    provided = set(secret["stringData"]) | {e["name"] for e in container.get("env", [])}
    check(env_refs <= provided, f"config needs {sorted(env_refs - provided)} from the Secret")
    hookd_check(config_text, {k: str(v) for k, v in secret["stringData"].items()})
    kustomization(objects)
    monitoring(objects, labels, ports)
    statefulset(objects, config)


def kustomization(objects: dict[tuple[str, str], dict]) -> None:
    """Every file kustomization.yaml lists, or lists commented out, exists."""
    text = (K8S / "kustomization.yaml").read_text()
    listed = yaml.safe_load(text)["resources"]
    commented = re.findall(r"(?m)^\s*#\s*-\s*(\S+\.yaml)\s*$", text)
    for name in [*listed, *commented]:
        check((K8S / name).is_file(), f"kustomization.yaml names {name}, which does not exist")
    check(
        not {"deployment.yaml", "statefulset.yaml"} <= set(listed),
        "kustomization.yaml lists both the Deployment and the StatefulSet",
    )


def monitoring(objects: dict[tuple[str, str], dict], labels: dict, ports: dict) -> None:
    """The admin Service, the ServiceMonitor and the NetworkPolicy select the hookd pods and
    name the container's ports."""
    admin = objects.get(("Service", "hookd-admin"))
    monitor = objects.get(("ServiceMonitor", "hookd"))
    policy = objects.get(("NetworkPolicy", "hookd"))
    check(admin is not None, "deploy/kubernetes has no Service hookd-admin")
    check(monitor is not None, "deploy/kubernetes has no ServiceMonitor hookd")
    check(policy is not None, "deploy/kubernetes has no NetworkPolicy hookd")
    if admin is None or monitor is None or policy is None:
        return
    spec = admin["spec"]
    check(spec.get("clusterIP") == "None", "Service hookd-admin should be headless")
    check(spec.get("publishNotReadyAddresses") is True, "hookd-admin must list unready pods")
    check(spec["selector"].items() <= labels.items(), "Service hookd-admin selects no hookd pod")
    check(
        [(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]]
        == [("admin", ports["admin"], "admin")],
        "Service hookd-admin must expose only the admin containerPort, as admin",
    )
    selector = monitor["spec"]["selector"]["matchLabels"]
    check(
        selector.items() <= admin["metadata"]["labels"].items(),
        "the ServiceMonitor does not select Service hookd-admin",
    )
    check(
        not selector.items() <= objects["Service", "hookd"]["metadata"]["labels"].items(),
        "the ServiceMonitor also selects the public Service, which has no admin port",
    )
    endpoints = monitor["spec"]["endpoints"]
    check(
        [(e["port"], e.get("path")) for e in endpoints] == [("admin", "/metrics")],
        "the ServiceMonitor should scrape port admin, path /metrics",
    )
    pod_selector = policy["spec"]["podSelector"]["matchLabels"]
    check(pod_selector.items() <= labels.items(), "the NetworkPolicy selects no hookd pod")
    check(policy["spec"]["policyTypes"] == ["Ingress"], "the NetworkPolicy should be Ingress only")
    open_to_all: set[object] = set()
    restricted: set[object] = set()
    for rule in policy["spec"]["ingress"]:
        rule_ports = {p["port"] for p in rule.get("ports", [])}
        check(rule_ports, "a NetworkPolicy rule without ports opens every port")
        check(
            rule_ports <= set(ports) | set(ports.values()),
            f"the NetworkPolicy names ports the container does not have: {sorted(rule_ports)}",
        )
        (restricted if rule.get("from") else open_to_all).update(rule_ports)
    check(open_to_all & {"http", ports["http"]}, "the NetworkPolicy must leave the http port open")
    check(
        not open_to_all & {"admin", ports["admin"]},
        "the NetworkPolicy opens the admin port to everyone",
    )
    check(restricted & {"admin", ports["admin"]}, "the NetworkPolicy lets nobody scrape /metrics")


def statefulset(objects: dict[tuple[str, str], dict], config: dict) -> None:
    """The StatefulSet is the Deployment with a volume claim for the spool, and its config is
    hookd-config with [spool] on that claim."""
    sts = objects.get(("StatefulSet", "hookd"))
    spool_map = objects.get(("ConfigMap", "hookd-config-spool"))
    check(sts is not None, "deploy/kubernetes has no StatefulSet hookd")
    check(spool_map is not None, "deploy/kubernetes has no ConfigMap hookd-config-spool")
    if sts is None or spool_map is None:
        return
    deployment = objects["Deployment", "hookd"]
    spec = sts["spec"]
    check(spec.get("serviceName") == "hookd-admin", "StatefulSet serviceName should be hookd-admin")
    check(spec["replicas"] == deployment["spec"]["replicas"], "StatefulSet and Deployment replicas")
    check(
        spec["selector"] == deployment["spec"]["selector"],
        "StatefulSet and Deployment select different pods",
    )
    claims = {c["metadata"]["name"]: c for c in spec.get("volumeClaimTemplates", [])}
    pod, expected = spec["template"], json.loads(json.dumps(deployment["spec"]["template"]))
    # The Deployment's pod with the claim for its spool emptyDir and the spool ConfigMap.
    volumes = expected["spec"]["volumes"]
    expected["spec"]["volumes"] = [v for v in volumes if v["name"] not in claims]
    for volume in expected["spec"]["volumes"]:
        if volume.get("configMap", {}).get("name") == "hookd-config":
            volume["configMap"]["name"] = "hookd-config-spool"
    check(pod == expected, "the StatefulSet's pod template differs from the Deployment's")
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    spool_config = tomllib.loads(spool_map["data"]["hookd.toml"])
    spool = spool_config.pop("spool", None)
    check(spool is not None, "hookd-config-spool has no [spool]")
    check(
        spool_config == {k: v for k, v in config.items() if k != "spool"},
        "hookd-config-spool differs from hookd-config other than in [spool]",
    )
    if spool is None:
        return
    on_claim = [n for n in claims if spool["path"].startswith(mounts.get(n, "//") + "/")]
    check(on_claim, f"[spool] path {spool['path']} is not on a volumeClaimTemplate")
    for name in on_claim:
        storage = claims[name]["spec"]["resources"]["requests"]["storage"]
        check(
            spool["max_bytes"] * config["server"].get("workers", 1) < _bytes(storage),
            f"[spool] max_bytes does not fit the {storage} claim",
        )
    secret = objects["Secret", "hookd-secrets"]
    hookd_check(
        spool_map["data"]["hookd.toml"], {k: str(v) for k, v in secret["stringData"].items()}
    )
    # The alert on a nearly full spool compares hookd_spool_bytes with a constant.
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    [near_full] = [
        r["expr"]
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "HookdSpoolNearFull"
    ]
    bound = re.search(r"0\.8 \* (\d+)", near_full)
    workers = config["server"].get("workers", 1)
    check(
        bound is not None and int(bound.group(1)) == spool["max_bytes"] * workers,
        "HookdSpoolNearFull's bound is not 0.8 x the StatefulSet's max_bytes x workers",
    )


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity)
    assert match is not None, quantity
    return int(match.group(1)) * units.get(match.group(2), 1)


def quix() -> None:
    app = yaml.safe_load((ROOT / "app.yaml").read_text())
    library = json.loads((ROOT / "library.json").read_text())
    yaml.safe_load((ROOT / "deploy" / "quix" / "quix.yaml").read_text())
    config_text = (ROOT / "deploy" / "quix.toml").read_text()
    config = tomllib.loads(config_text)
    check("broker_address" not in config.get("kafka", {}), "quix.toml must not set a broker")
    check((ROOT / app["dockerfile"]).exists(), f"app.yaml dockerfile {app['dockerfile']} missing")
    check((ROOT / library["EntryPoint"]).exists(), "library.json EntryPoint does not exist")
    declared = {v["name"]: v for v in app["variables"]}
    check(declared.get("output", {}).get("inputType") == "OutputTopic", "no OutputTopic output")
    secret = declared.get("WEBHOOK_SECRET", {})
    check(secret.get("secret") is True, "WEBHOOK_SECRET must be a secret variable")
    check(
        {v["Name"] for v in library["Variables"]} == set(declared),
        "library.json and app.yaml declare different variables",
    )
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", config_text))
    undeclared = sorted(required - set(declared))
    check(not undeclared, f"quix.toml reads variables app.yaml does not declare: {undeclared}")
    ports = library["DeploySettings"]["Network"]["Ports"]
    listen = config["server"]["listen"]
    default_port = re.search(r":(\d+)\}?\"?$", listen)
    check(
        default_port is not None and int(default_port.group(1)) == ports[0]["TargetPort"],
        "library.json TargetPort differs from server.listen in quix.toml",
    )
    hookd_check(
        config_text,
        {"output": "webhooks", "WEBHOOK_SECRET": "check", "HOOKD_VERIFY": "github"},
    )


def main() -> int:
    kubernetes()
    quix()
    for problem in problems:
        print(f"check_manifests: {problem}", file=sys.stderr)
    if not problems:
        print("check_manifests: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
