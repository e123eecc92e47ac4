"""The shipped alert rules and dashboard: promtool accepts the rules and their unit tests pass,
every metric they read is in README's metrics table (so docs, rules and dashboard cannot
drift apart), the dashboard covers every metric, and every runbook_url has its entry in
docs/operations.md.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it). Without it the
promtool tests skip, saying so, except where ``CI`` is set: there they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML, as tests/unit/test_client_config.py: imported, never skipped

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yaml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts_test.yaml"
DASHBOARD = ROOT / "deploy/grafana/hookd.json"
RUNBOOK = ROOT / "docs/operations.md"
RUNBOOK_SECTION = "## Alerts and runbook"

#: Metrics the rules read that are not hookd's: the scrape's own and kube-state-metrics'.
EXTERNAL = {"up", "kube_pod_status_ready", "kube_pod_container_status_restarts_total"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


def readme_metrics() -> dict[str, str]:
    """README's metrics table: every name in its first column, and its type."""
    text = (ROOT / "README.md").read_text()
    start = text.index("| metric | type | labels |")
    metrics: dict[str, str] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for name in re.findall(r"`(hookd_\w+)`", cells[0]):
            metrics[name] = cells[1]
    return metrics


def metric_names(expr: str) -> set[str]:
    """The metrics a PromQL expression reads: hookd's by prefix, any other by its selector."""
    names = set(re.findall(r"\bhookd_\w+", expr))
    names |= {n for n in re.findall(r"\b([a-zA-Z_:][\w:]*)\s*\{", expr) if n != "by"}
    return names


def base_name(name: str, histograms: set[str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
            return name.removesuffix(suffix)
    return name


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (as tests/unit/test_docs.py)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_headings() -> list[str]:
    text = RUNBOOK.read_text()
    assert RUNBOOK_SECTION in text, f"docs/operations.md has no {RUNBOOK_SECTION!r} section"
    section = text.split(RUNBOOK_SECTION, 1)[1]
    section = re.split(r"(?m)^## ", section, maxsplit=1)[0]
    section = re.sub(r"```.*?```", "", section, flags=re.S)
    return re.findall(r"(?m)^### (.+)$", section)


# -- pure checks: no promtool -------------------------------------------------------------


def test_every_alert_has_a_severity_and_a_runbook_entry():
    anchors = {slug(h) for h in runbook_headings()}
    names = []
    for rule in alert_rules():
        name = rule["alert"]
        names.append(name)
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        url = annotations["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md", f"{name}: runbook_url {url} is not docs/operations.md"
        assert anchor in anchors, f"{name}: no #{anchor} in docs/operations.md's runbook"
        assert anchor == slug(name), f"{name}: its runbook entry should be headed {name}"
    assert len(names) == len(set(names)), "two alerts share a name"
    # and no runbook entry for an alert that does not exist
    assert {slug(h) for h in runbook_headings()} == {slug(n) for n in names}


def test_the_rules_and_the_dashboard_read_only_metrics_the_readme_lists():
    documented = readme_metrics()
    histograms = {name for name, kind in documented.items() if kind == "histogram"}
    sources = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    sources += [("dashboard", expr) for expr in dashboard_exprs()]
    for where, expr in sources:
        for name in metric_names(expr):
            if name in EXTERNAL:
                continue
            assert base_name(name, histograms) in documented, (
                f"{where} reads {name}, which README's metrics table does not list"
            )


def test_the_dashboard_shows_every_metric_the_readme_lists():
    histograms = {name for name, kind in readme_metrics().items() if kind == "histogram"}
    shown = {base_name(n, histograms) for e in dashboard_exprs() for n in metric_names(e)}
    missing = sorted(set(readme_metrics()) - shown)
    assert not missing, f"deploy/grafana/hookd.json has no panel for {missing}"


def test_the_dashboard_takes_its_datasource_from_a_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    wanted = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == wanted, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == wanted, panel["title"]


# -- promtool -----------------------------------------------------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (CI is set): apt-get install -y prometheus")
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_rules():
    run = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in run.stdout


def test_promtool_test_rules():
    run = run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        own = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in own), f"no test fires {name}"
        assert any(not case.get("exp_alerts") for case in own), f"no test keeps {name} quiet"


def test_the_dashboard_queries_parse(tmp_path):
    # promtool parses PromQL only in rule files: each query, with Grafana's variables given
    # values, becomes a recording rule.
    substitutions = {"$__rate_interval": "5m", "$namespace": ".*", "$pod": ".*", "$route": ".*"}
    rules = []
    for i, expr in enumerate(e for e in dashboard_exprs() if not e.startswith("label_values")):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a dashboard query uses an unknown variable: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = run_promtool("check", "rules", str(path))
    assert run.returncode == 0, run.stdout + run.stderr


# -- deploy/check_manifests.py: the manifests, the StatefulSet and the alerts' spool bound ---


def test_the_manifests_agree():
    run = subprocess.run(
        [sys.executable, "deploy/check_manifests.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
