"""`iotdeck bench rules` in a tiny configuration: both parts run and report sane figures.

No timing is asserted: only that every figure is there, positive where it must be, and
that nothing was lost on the way (ingest stored every point, the evaluator saw them all).
"""

import json
import shutil

import pytest

from bench.rules_engine import rule_texts
from rules.parser import parse_rule
from tests.serving import bench_stdout

TINY = ["--rules", "5", "--devices", "20", "--points", "3000", "--repeats", "1"]
TINY += ["--seconds", "2", "--backlog", "600"]
SCALING = ["--rule-workers", "1", "--rule-workers", "2"]


def test_the_generated_rules_parse_and_mix_the_language() -> None:
    texts = rule_texts(100)
    parsed = [parse_rule(text) for text in texts]
    assert len({rule.name for rule in parsed}) == 100
    for construct in ("avg(", "max(", "rate(", "delta(", "nodata(", " for ", "clear when"):
        assert any(construct in text for text in texts), construct
    scopes = {rule.scope.kind for rule in parsed}
    assert scopes == {"type", "all"}


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_tiny_run_reports_both_parts() -> None:
    stdout = bench_stdout("rules", *TINY)
    assert "rules benchmark: 5 rules, 20 devices" in stdout
    summary = json.loads(stdout.strip().splitlines()[-1])

    engine = summary["micro"]
    assert (engine["rules"], engine["devices"], engine["points"]) == (5, 20, 3000)
    assert engine["us_per_point"] > 0
    assert engine["points_per_s"] > 0
    assert engine["rules_per_point"] > 0

    ingest = summary["macro"]
    assert ingest["committed_points_per_s_without_rules"] > 0
    assert ingest["committed_points_per_s_with_rules"] > 0
    with_rules = ingest["committed_points_per_s_with_rules"]
    assert 0 < with_rules / ingest["committed_points_per_s_without_rules"] < 2
    assert ingest["ratio"] is None or 0 < ingest["ratio"] < 2  # None: not sustained with rules
    assert 0 < ingest["drain_ratio"] < 2
    assert ingest["lost_points"] == 0
    live = ingest["with_rules"]["live"]
    assert live["lost_points"] == 0
    assert live["evaluated_points"] > 0
    assert live["evaluator_lost_points"] == 0
    assert live["evaluator_dropped_msgs"] == 0
    drain = ingest["with_rules"]["drain"]  # a small backlog: the evaluator's queue holds it
    assert (drain["evaluator_dropped_points"], drain["evaluator_replayed_points"]) == (0, 0)
    assert drain["evaluator_lost_points"] == 0
    fleet = ingest["with_rules"]["fleet"]  # 20 devices, each once a second
    assert fleet["offered_msgs_per_s"] == pytest.approx(20, rel=0.25)
    assert fleet["evaluated_points"] > 0
    assert fleet["evaluator_lost_points"] == 0
    assert ingest["fleet_evaluator_p99_latency_ms"] == fleet["evaluator_p99_latency_ms"] > 0
    assert "fleet shape, every device every 1 s" in stdout
    assert "WARNING: the evaluator lost" not in stdout
    assert "evaluated_points" not in ingest["without_rules"]["live"]  # no evaluator ran


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_tiny_scaling_run_splits_the_work_and_makes_the_same_alerts() -> None:
    stdout = bench_stdout("rules", "--rules", "5", "--devices", "20", "--points", "3000", *SCALING)
    assert "rule evaluation shared by partition: 5 rules, 20 devices" in stdout
    summary = json.loads(stdout.strip().splitlines()[-1])
    one, two = summary["runs"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["points"] == two["points"] > 0
    assert sum(two["per_process_points"]) == two["points"]  # each point evaluated once
    assert all(share > 0 for share in two["per_process_points"])  # both had partitions
    assert one["fired"] == two["fired"]  # the same alerts, whoever evaluated
    assert summary["ratio"] > 0
