"""The Grafana dashboard, the Prometheus rules and docs/operations.md name only metrics the services export."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.promql import PROMETHEUS_SYNTHETIC, exported_families, exported_samples, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))


def _targets(panels: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found = []
    for panel in panels:
        found += [(panel["title"], t["expr"]) for t in panel.get("targets", []) if t.get("expr")]
        found += _targets(panel.get("panels", []))
    return found


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (reason) (rate(ingest_messages_refused_total{reason!="x"}[$__rate_interval])) > 0',
         {"ingest_messages_refused_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(ingest_lag_seconds_bucket[5m])))", {"ingest_lag_seconds_bucket"}),
        ("sum(rate(a_sum[1m])) / sum(rate(a_count[1m]))", {"a_sum", "a_count"}),
        ('up{job="delivery"} == 0', {"up"}),
        ("max(delivery_oldest_due_seconds) > 300", {"delivery_oldest_due_seconds"}),
        ("x_total offset 5m and on(instance) y", {"x_total", "y"}),
    ],
)  # fmt: skip
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_covers_the_pipeline() -> None:
    assert [p.name for p in DASHBOARDS] == ["rpm-telemetry.json"]
    dashboard = json.loads(DASHBOARDS[0].read_text())
    titles = {title for title, _ in _targets(dashboard["panels"])}
    for required in (
        "Ingest rate",
        "Refusals by reason",
        "Lag (received - measured)",
        "Batch latency",
        "Outbox backlog",
        "Alerts raised",
        "Alerts delivered",
        "Alerts escalated",
        "Delivery failures",
    ):
        assert required in titles
    # Provisioned by uid "prometheus" (deploy/grafana/provisioning/datasources/prometheus.yml).
    assert all(t["datasource"]["uid"] == "prometheus" for p in dashboard["panels"] for t in p.get("targets", []))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_names_an_exported_metric(path: Path) -> None:
    exported = exported_samples() | PROMETHEUS_SYNTHETIC
    queries = _targets(json.loads(path.read_text())["panels"])
    assert queries
    unknown = {(title, name) for title, expr in queries for name in metric_names(expr) if name not in exported}
    assert unknown == set()


def test_every_alerting_rule_names_an_exported_metric() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    exported = exported_samples() | PROMETHEUS_SYNTHETIC
    exprs = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    assert exprs
    assert {n for e in exprs for n in metric_names(e)} <= exported


def test_prometheus_config_and_rules_are_valid() -> None:
    for args in (
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["check", "rules", "deploy/prometheus/rules.yml"],
    ):
        result = subprocess.run(["promtool", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_operations_doc_lists_exactly_the_exported_metrics() -> None:
    text = (ROOT / "docs/operations.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", text, re.MULTILINE))
    exported = set().union(*exported_families().values())
    assert exported - documented == set(), "exported but not in docs/operations.md"
    assert documented - exported == set(), "in docs/operations.md but not exported"
