"""`iotdeck bench ingest --rate-per-device/--fleet` and `iotdeck bench fleet`, tiny.

No timing is asserted (the goals are for the full sizes on a quiet machine): only that each
run reports every figure, with values that make sense for what it did.
"""

import json
from pathlib import Path

import pytest

from app.mqtt.broker import MOSQUITTO
from app.sim.simulator import SHARED_CONNECTIONS
from tests.serving import bench_stdout

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="needs Mosquitto")

SHAPE_FIELDS = {
    "devices",
    "rate_per_device",
    "registered_s",
    "seconds",
    "publishers",
    "offered_msgs_per_s",
    "offered_points_per_s",
    "committed_points_per_s",
    "lag_points_at_end",
    "publisher_unacked_at_end",
    "publisher_unacked_in_all",
    "catch_up_s",
    "lost_points",
    "p50_latency_ms",
    "p99_latency_ms",
    "rejected",
    "ingest_peak_rss_mb",
    "ingest_cpu_pct",
    "machine_busy_pct",
    "devices_table",
}


def _check_shape(row: dict, devices: int, rate_per_device: float) -> None:
    assert set(row) == SHAPE_FIELDS
    assert row["devices"] == devices
    assert row["rate_per_device"] == pytest.approx(rate_per_device)
    offered = devices * rate_per_device
    assert row["offered_msgs_per_s"] == pytest.approx(offered, rel=0.2)
    assert row["offered_points_per_s"] == pytest.approx(3 * row["offered_msgs_per_s"], abs=3)
    assert 0 < row["committed_points_per_s"] <= 2 * row["offered_points_per_s"]
    assert row["lag_points_at_end"] >= 0
    assert row["catch_up_s"] is not None  # a tiny load is caught up at once
    assert row["lost_points"] == 0
    assert row["publisher_unacked_in_all"] == 0
    assert row["rejected"] == 0
    assert 0 < row["p50_latency_ms"] <= row["p99_latency_ms"]
    assert row["ingest_peak_rss_mb"] > 0
    assert row["ingest_cpu_pct"] > 0
    churn = row["devices_table"]
    assert churn["before"]["live"] == devices
    assert churn["updates"] >= 0 and churn["dead_tuples"] >= 0
    assert churn["hot_updates"] <= churn["updates"]


def test_one_fleet_size() -> None:
    out = bench_stdout("ingest", "--devices", "300", "--rate-per-device", "1", "--seconds", "4")
    _check_shape(json.loads(out), 300, 1.0)


def test_the_fleet_shape_table() -> None:
    sizes = ["--fleet-size", "100", "--fleet-size", "300"]
    out = bench_stdout("ingest", "--fleet", *sizes, "--rate", "300", "--seconds", "4")
    table, summary = out.rsplit("\n", 2)[0], json.loads(out.strip().splitlines()[-1])
    assert "| devices | rate per device, msgs/s |" in table
    assert summary["offered_total_msgs_per_s"] == 300
    rows = summary["rows"]
    assert [row["devices"] for row in rows] == [100, 300]
    for row in rows:
        _check_shape(row, row["devices"], 300 / row["devices"])
    goals = summary["goals"]
    assert goals["ratio_devices"] == [300, 100]
    assert goals["ratio"] == pytest.approx(
        rows[1]["committed_points_per_s"] / rows[0]["committed_points_per_s"], abs=0.001
    )
    assert goals["rss_mb"] == rows[1]["ingest_peak_rss_mb"]
    assert isinstance(goals["ratio_met"], bool) and isinstance(goals["rss_met"], bool)


def test_bench_fleet_reports_each_part() -> None:
    out = bench_stdout(
        "fleet",
        *("--devices", "300", "--silent", "150", "--type-devices", "100"),
        *("--requests", "5", "--rules", "10"),
        *("--simulate-devices", "150", "--simulate-rate", "5", "--seconds", "3"),
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert "| GraphQL request |" in out
    assert result["devices"] == 300
    assert result["serve_settled_s"] >= 0
    assert result["offline_job"]["marked"] == 150
    assert result["offline_job"]["events"] == 2 * 150  # STATUS_CHANGED on both channels
    assert result["offline_job"]["seconds"] > 0
    assert result["offline_round"]["marked"] == 3  # 1% of 300, ONLINE again and silent
    assert result["offline_round"]["events"] == 2 * 3

    dashboards = result["dashboards"]
    assert dashboards["type_devices"] == 100
    assert dashboards["device_table_first_page"]["rows"] == 20
    assert dashboards["device_table_first_page"]["total"] == 100
    assert dashboards["device_table_last_page"]["rows"] == 20
    assert dashboards["bar_top_20"]["rows"] == 20
    assert dashboards["bar_top_100"]["rows"] == 100

    graphql = result["graphql"]
    answers = {name: figures["answer"] for name, figures in graphql.items()}
    assert answers["first_page"] == answers["page_500"] == 100
    assert answers["count_all"] == 300
    assert answers["filter_status"] == 100  # one page of the 150 marked OFFLINE
    assert answers["count_status"] == 150
    assert answers["count_search"] == answers["search_common"] == 30  # "lyon": 1 in 10
    for figures in graphql.values():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
        assert 0 <= figures["server_within_100ms"] <= 1

    for name in ("without_windows", "with_windows"):
        assert result["rule_memory"][name]["rules"] == 10
        assert result["rule_memory"][name]["bytes_per_device"] > 0

    simulate = result["simulate"]
    assert simulate["broker_connections"] == SHARED_CONNECTIONS
    assert simulate["cpu_pct_of_one_core"] > 0
    assert simulate["msgs_per_s_delivered"] > 0
    assert simulate["exit_code"] == 0
    assert set(result["goals"]) >= {"graphql_p99_met", "offline_job_met", "rule_memory_met"}
