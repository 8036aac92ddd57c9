"""deploy/prometheus and deploy/grafana hold together: promtool accepts them, every alert is
tested, every panel asks the provisioned Prometheus datasource something."""

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from tests.deploy.monitoring import (
    ALERT_RULES,
    ALERT_TESTS,
    DATASOURCE_UID,
    MISSING,
    PROMETHEUS_CONFIG,
    PROMTOOL,
    PROVISIONING,
    alert_names,
    dashboards,
    load_yaml,
    panel_queries,
    panels,
)

SEVERITIES = {"critical", "warning", "none"}
OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"
# the paths docker-compose and deploy/k8s mount these files at
GRAFANA_DASHBOARDS_PATH = "/var/lib/grafana/dashboards"
PROMETHEUS_URL = "http://prometheus:9090"


@pytest.mark.parametrize(
    "check",
    [
        ["check", "config", PROMETHEUS_CONFIG],
        ["check", "rules", ALERT_RULES],
        ["test", "rules", ALERT_TESTS],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool_accepts_it(check: list[str]) -> None:
    assert PROMTOOL is not None, MISSING
    done = subprocess.run(
        [PROMTOOL, *map(str, check)], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet() -> None:
    cases: dict[str, set[str]] = defaultdict(set)
    for test in load_yaml(ALERT_TESTS)["tests"]:
        for case in test.get("alert_rule_test", []):
            cases[case["alertname"]].add("fires" if case.get("exp_alerts") else "quiet")
    always = {
        rule["alert"]
        for group in load_yaml(ALERT_RULES)["groups"]
        for rule in group["rules"]
        if rule["expr"] == "vector(1)"  # the Watchdog cannot stay quiet
    }
    untested = {
        name: sorted({"fires", "quiet"} - cases[name] - ({"quiet"} if name in always else set()))
        for name in alert_names()
    }
    assert {name: missing for name, missing in untested.items() if missing} == {}
    assert cases.keys() <= set(alert_names()), "alerts.test.yml tests an alert that is gone"


def test_every_alert_tells_the_operator_how_bad_it_is_and_what_to_do() -> None:
    # the runbook anchor: GitHub makes `#### IngestStalled` into #ingeststalled
    runbooks = set(re.findall(r"^#### (\w+)$", OPERATIONS.read_text(), flags=re.M))
    problems = []
    for group in load_yaml(ALERT_RULES)["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            annotations = rule.get("annotations", {})
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problems.append(f"{name}: severity not one of {sorted(SEVERITIES)}")
            if not (annotations.get("summary") and annotations.get("description")):
                problems.append(f"{name}: summary or description missing")
            if annotations.get("runbook") != f"docs/operations.md#{name.lower()}":
                problems.append(f"{name}: runbook is not docs/operations.md#{name.lower()}")
            if name not in runbooks:
                problems.append(f"{name}: docs/operations.md has no heading `#### {name}`")
    assert problems == []


def test_every_panel_asks_the_provisioned_prometheus_a_query() -> None:
    problems = []
    for file, dashboard in dashboards().items():
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            where = f"{file} / {panel['title']}"
            sources = [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]
            if any((source or {}).get("uid") != DATASOURCE_UID for source in sources):
                problems.append(f"{where}: a datasource other than uid {DATASOURCE_UID}")
            if not panel["targets"]:
                problems.append(f"{where}: no query")
        problems += [
            f"{file} / {q.panel}: empty expr" for q in panel_queries(dashboard) if not q.expr
        ]
    assert problems == []


def test_dashboards_have_unique_uids_and_panel_ids() -> None:
    boards = dashboards()
    assert len(boards) >= 6  # the seed's four, ingest and rules
    uids = [dashboard["uid"] for dashboard in boards.values()]
    assert len(set(uids)) == len(uids)
    for file, dashboard in boards.items():
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(set(ids)) == len(ids), file


def test_grafana_provisioning_points_at_prometheus_and_the_mounted_dashboards() -> None:
    [source] = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert (source["type"], source["uid"], source["url"]) == (
        "prometheus",
        DATASOURCE_UID,
        PROMETHEUS_URL,
    )
    # $__rate_interval is computed from it: it must be Prometheus' real scrape interval
    scrape = load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape
    [provider] = load_yaml(PROVISIONING / "dashboards" / "iotdeck.yml")["providers"]
    assert (provider["type"], provider["options"]["path"]) == ("file", GRAFANA_DASHBOARDS_PATH)


def test_prometheus_scrapes_serve_and_ingest_and_loads_the_alerts() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"serve", "ingest"} <= jobs.keys()
    # every replica of a compose service, by its DNS name
    assert jobs["ingest"]["dns_sd_configs"] == [
        {"names": ["ingest"], "type": "A", "port": 9464, "refresh_interval": "30s"}
    ]
    assert jobs["serve"]["dns_sd_configs"][0]["names"] == ["app"]
    assert config["rule_files"] == [ALERT_RULES.name]
