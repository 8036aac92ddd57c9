"""`iotdeck worker`: what it needs to start, and says when it is missing.

Workers sharing the rules by partition, and one killed, are in
tests/integration/test_partition_ownership.py.
"""

import subprocess
from pathlib import Path

from bench.services import iotdeck_environment
from tests.serving import IOTDECK


def test_a_worker_without_redis_or_a_broker_says_which_setting_is_missing(
    tmp_path: Path,
) -> None:
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}",
        IOTDECK_JWT_SECRET="worker-tests-" + "w" * 40,
        IOTDECK_METRICS_PORT="0",
    )
    env.pop("IOTDECK_REDIS_URL", None)
    env.pop("IOTDECK_MQTT_URL", None)
    answer = subprocess.run(
        [IOTDECK, "worker"], env=env, capture_output=True, text=True, check=False
    )
    assert answer.returncode != 0 and "IOTDECK_REDIS_URL is not set" in answer.stderr
    env["IOTDECK_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    answer = subprocess.run(
        [IOTDECK, "worker"], env=env, capture_output=True, text=True, check=False
    )
    assert answer.returncode != 0 and "IOTDECK_MQTT_URL is not set" in answer.stderr
