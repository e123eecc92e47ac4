"""Check that deploy/ agrees with itself and with hookd: the Kubernetes manifests and the
Quix Cloud descriptors parse, point at the same ports, names and paths, and their configs
pass ``hookd check``.

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


def kubernetes() -> None:
    docs = {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted(K8S.glob("*.yaml"))}
    kinds = {d["kind"]: d for docs_ in docs.values() for d in docs_ if d}
    for kind in ("Deployment", "Service", "ConfigMap", "Secret"):
        check(kind in kinds, f"deploy/kubernetes has no {kind}")
    deployment, service = kinds["Deployment"], kinds["Service"]
    config_map, secret = kinds["ConfigMap"], kinds["Secret"]
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
