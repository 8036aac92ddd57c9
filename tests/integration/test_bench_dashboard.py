"""`iotdeck bench dashboard` in a tiny configuration: every phase reports its figures.

No timing is asserted (the goals are for the full run on a quiet machine): only that the
dashboard is valid, the viewers rendered it and saw live values, and each figure is there
next to its baseline.
"""

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from app.dashboards.spec import parse_spec
from app.mqtt.broker import MOSQUITTO
from bench.dashboard import CHROMIUM, dashboard_spec, live_points_per_period
from tests.serving import bench_stdout

TINY = ["--viewers", "2", "--devices", "5", "--seconds", "4"]


def test_the_dashboard_has_the_twelve_widgets_of_the_issue() -> None:
    spec = dashboard_spec([str(uuid.uuid4()) for _ in range(50)])
    parse_spec(spec)  # refused with a ValidationError otherwise
    kinds = Counter(widget["type"] for widget in spec["widgets"])
    assert kinds == {
        "stat": 4,
        "gauge": 2,
        "timeseries": 2,
        "bar": 1,
        "device_table": 1,
        "alerts": 1,
        "fleet": 1,
    }
    # 4 stats, 2 gauges, 2 x 3 series, a bar per device, a 20-row table of one metric
    assert live_points_per_period(spec, 50) == 4 + 2 + 6 + 50 + 20
    assert live_points_per_period(spec, 5) == 4 + 2 + 6 + 5 + 5


@pytest.mark.skipif(
    not Path(CHROMIUM).exists() or not Path(MOSQUITTO).exists(),
    reason="needs Debian's Chromium and Mosquitto",
)
def test_tiny_run_reports_every_figure_beside_its_baseline() -> None:
    stdout = bench_stdout("dashboard", *TINY)
    assert "dashboard benchmark: 12 widgets, 5 devices at 1 Hz, 2 viewers" in stdout
    summary = json.loads(stdout.strip().splitlines()[-1])

    assert summary["published_msgs"] > 0
    assert summary["cold_render_s"] > 0
    phases = summary["phases"]
    assert [phases[name]["viewers"] for name in ("idle", "one", "many")] == [0, 1, 2]
    for phase in phases.values():
        assert phase["server_cpu_pct"] > 0
        assert phase["server_rss_mb"] > 0
        assert phase["db_transactions_per_s"] > 0  # ingest commits, viewers or not
    for name in ("one", "many"):
        phase = phases[name]
        assert phase["renders_completed"] == phase["renders_opened"] == 1
        assert phase["render_p50_s"] > 0
        assert phase["updates_seen"] > 0, phase
        assert phase["updates_sent"] == 4 * 4 * phase["viewers"]  # 4 stats, 1 Hz, 4 s
        assert phase["reloads"] >= 0
        assert 0 < phase["p50_latency_ms"] <= phase["p99_latency_ms"] <= phase["max_latency_ms"]
        for key in (
            "server_cpu_pct_per_viewer",
            "browser_cpu_pct_per_viewer",
            "server_rss_mb_per_viewer",
            "db_transactions_per_s_per_viewer",
            "db_transactions_per_live_point",
        ):
            assert isinstance(phase[key], float), key

    goals = summary["goals"]
    for key in ("first_render_met", "p99_latency_met", "no_query_per_live_point_met"):
        assert isinstance(goals[key], bool), key
