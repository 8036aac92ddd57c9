"""deploy/prometheus and deploy/grafana as the tests read them, and a real Prometheus.

Grafana is not packaged here, so a dashboard is proven the way Grafana would use it: each
panel's PromQL, with Grafana's variables filled in, run through Prometheus' HTTP API.
"""

import json
import math
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.services import free_port
from tests.serving import answers, running

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
DATASOURCE_UID = "prometheus"

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
MISSING = (
    "no `prometheus`/`promtool` binary (Debian: apt-get install prometheus): "
    "deploy/prometheus cannot be checked"
)

# Grafana's $var, ${var}, ${var:format} and [[var]]
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
# a name with an underscore that no "(" follows: a metric (functions are called, and the
# label names these files group by have no underscore)
METRIC_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9:]*_[a-zA-Z0-9_:]+)\b(?!\s*\()")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel: what Grafana sends to Prometheus for it."""

    dashboard: str
    panel: str
    expr: str
    instant: bool

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel}: {self.expr}"


def load_yaml(path: Path) -> Any:
    """A YAML file of deploy/."""
    return yaml.safe_load(path.read_text())


def alert_names() -> list[str]:
    """Every alert of alerts.yml, in file order."""
    groups = load_yaml(ALERT_RULES)["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def alert_metric_names() -> set[str]:
    """The metric names the expressions of alerts.yml read."""
    groups = load_yaml(ALERT_RULES)["groups"]
    exprs = [QUOTED.sub('""', rule["expr"]) for group in groups for rule in group["rules"]]
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def dashboards() -> dict[str, dict[str, Any]]:
    """The dashboard models of deploy/grafana/dashboards, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> Iterator[PanelQuery]:
    """Every target of every panel but rows (which hold no query)."""
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        for target in panel.get("targets", []):
            yield PanelQuery(
                dashboard=dashboard["title"],
                panel=panel["title"],
                expr=target.get("expr", ""),
                instant=bool(target.get("instant")) and not target.get("range"),
            )


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """What each template variable stands for when "All" (or the first value) is picked."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("includeAll"):
            values[variable["name"]] = variable.get("allValue") or ".*"
        else:
            values[variable["name"]] = variable["options"][0]["value"]
    return values


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(name, PromQL) for each `label_values(selector, label)` variable: the query whose
    result must carry `label` for the variable to offer anything."""
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        found = LABEL_VALUES.match(query.strip())
        assert found, f"{dashboard['title']}: variable {variable['name']}: {query}"
        yield variable["name"], f"count by ({found[2]}) ({found[1]})"


def grafana_expr(expr: str, values: dict[str, str]) -> str:
    """`expr` as Grafana sends it: its variables (`values`: built-in and template) filled."""

    def fill(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name}")
        return values[name]

    return VARIABLE.sub(fill, expr)


def builtin_values(*, scrape_seconds: int, step_seconds: int, range_seconds: int) -> dict[str, str]:
    """Grafana's built-in variables for a dashboard over `range_seconds` at `step_seconds`.

    $__rate_interval is Grafana's max($__interval + scrape interval, 4 * scrape interval).
    """
    rate_interval = max(step_seconds + scrape_seconds, 4 * scrape_seconds)
    return {
        "__interval": f"{step_seconds}s",
        "__interval_ms": str(step_seconds * 1000),
        "__rate_interval": f"{rate_interval}s",
        "__range": f"{range_seconds}s",
        "__range_s": str(range_seconds),
        "__range_ms": str(range_seconds * 1000),
    }


def has_data(result: list[dict[str, Any]]) -> bool:
    """Whether a query result holds a finite value Grafana would draw (NaN draws nothing)."""
    samples = [s for series in result for s in series.get("values", [series.get("value")])]
    return any(sample and math.isfinite(float(sample[1])) for sample in samples)


class Prometheus:
    """A running Prometheus' HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **params: str | float) -> Any:
        answer = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = answer.json()
        if body["status"] != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's series (now, or at unix time `at`)."""
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self._get("/api/v1/query", **params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query's series, as a timeseries panel asks for them."""
        return self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)[
            "result"
        ]

    def metric_names(self) -> set[str]:
        """Every metric name Prometheus has stored."""
        return set(self._get("/api/v1/label/__name__/values"))


def scrape_config(targets: dict[str, list[str]], scrape_seconds: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each job's discovery replaced by `targets`
    (by job name: the jobs must be the same), its intervals by `scrape_seconds`, and
    alerts.yml by its absolute path."""
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert sorted(jobs) == sorted(targets), f"prometheus.yml scrapes {jobs}"
    interval = f"{scrape_seconds}s"
    config["global"] |= {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(ALERT_RULES)]
    for job in config["scrape_configs"]:
        for discovery in [k for k in job if k.endswith("sd_configs") or k == "static_configs"]:
            del job[discovery]
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return config


@contextmanager
def running_prometheus(
    root: Path, targets: dict[str, list[str]], scrape_seconds: int = 1
) -> Iterator[Prometheus]:
    """The system's Prometheus on a free port, its data in `root`, scraping `targets`
    (job name -> host:port list, "self" for its own address) as prometheus.yml says."""
    assert PROMETHEUS is not None, MISSING
    root.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    resolved = {job: [address if t == "self" else t for t in ts] for job, ts in targets.items()}
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(resolved, scrape_seconds)))
    command = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address={address}",
    ]
    url = f"http://{address}"
    with running(command, {}, root / "prometheus.log", lambda: answers(f"{url}/-/ready")):
        yield Prometheus(url)
