"""A dead webhook receiver stops costing attempts: its circuit opens, deliveries wait
("circuit open" on the alert) without a request, and drain once it answers again.

A real HTTP receiver counts the requests; the dispatcher runs on this test's database.
"""

import uuid
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from app.core.models import NotificationDelivery
from app.workers.circuits import CircuitPolicy
from tests.integration.notifying import deliveries, eventually, fire, running, webhooks
from tests.receivers import Receivers

pytestmark = pytest.mark.usefixtures("allow_private_webhooks")

THRESHOLD = 3
# long enough that the checks below are done before the first half-open attempt
COOLDOWN = timedelta(seconds=5)
CIRCUIT = CircuitPolicy(threshold=THRESHOLD, cooldown=COOLDOWN, max_cooldown=2 * COOLDOWN)


def _open_circuits() -> float:
    return REGISTRY.get_sample_value("notification_circuit_open", {"channel": "webhook"}) or 0.0


async def test_an_open_circuit_holds_deliveries_without_requests_until_the_target_is_back(
    engine: Engine, receivers: Receivers
) -> None:
    url = receivers.url("/down")
    receivers.script["/down"] = [503] * 100
    open_before = _open_circuits()

    def delivery(alert_id: uuid.UUID) -> NotificationDelivery:
        return deliveries(engine, alert_id)[url]

    def held(alert_id: uuid.UUID) -> bool:
        return (delivery(alert_id).last_error or "").startswith("circuit open")

    async with running(webhooks(), circuits=CIRCUIT):
        first = fire(engine, [("webhook", url)])
        # three failed attempts in a row open the circuit...
        await eventually(lambda: _open_circuits() == open_before + 1)
        assert len(receivers.at("/down")) == THRESHOLD
        # ...so the next alerts to the same target cost no request: they wait, saying why
        later = [fire(engine, [("webhook", url)]) for _ in range(2)]
        await eventually(lambda: all(held(alert_id) for alert_id in [first, *later]))
        for alert_id in later:
            waiting = delivery(alert_id)
            assert waiting.last_error is not None
            assert waiting.last_error.startswith(
                f"circuit open: {THRESHOLD} failures in a row, next try at "
            )
            assert waiting.last_error.endswith(" UTC")
            assert (waiting.status, waiting.attempts) == ("PENDING", 0)  # nothing used up
        assert len(receivers.at("/down")) == THRESHOLD
        # the receiver recovers: one half-open attempt succeeds and the queue drains
        receivers.script["/down"] = []
        await eventually(
            lambda: all(delivery(a).status == "SENT" for a in [first, *later]),
            timeout=3 * COOLDOWN.total_seconds(),
        )
        assert _open_circuits() == open_before
    assert len(receivers.at("/down")) == THRESHOLD + 3  # the failures, then one send each
    assert delivery(first).attempts == THRESHOLD + 1
    assert [delivery(alert_id).attempts for alert_id in later] == [1, 1]
