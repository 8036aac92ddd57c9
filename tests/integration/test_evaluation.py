"""Committed points reach the rule engine through the bus and become alerts."""

import asyncio
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from app.core import bus
from app.core.leadership import EVALUATOR, ROLLUPS, try_lead
from app.core.models import AlertStatus, DeviceCreate, utcnow
from app.services import alerts, devices, rules, telemetry
from app.services.rules import RuleInput
from app.services.telemetry import Point
from app.workers.evaluation import Evaluator

RULE = """
rule "Hot"
  on type "thermostat"
  when temperature > 30
  clear when temperature < 25
"""


async def test_a_violating_point_opens_an_alert_and_a_clearing_point_resolves_it(
    engine: Engine, hub: bus.Hub
) -> None:
    with Session(engine, expire_on_commit=False) as session:
        device = devices.create_device(
            session=session, data=DeviceCreate(name="d", type="thermostat")
        )
        rule = rules.create_rule(session=session, data=RuleInput(expression=RULE))
        session.commit()
    evaluator = Evaluator()
    evaluator.load()
    points = hub.subscribe(channels=[bus.telemetry_channel(device.id)])
    triggered = hub.subscribe(channels=[bus.ALERTS])
    start = utcnow() - timedelta(minutes=5)

    async def write(minute: int, value: float) -> list:
        with Session(engine) as session:
            at = start + timedelta(minutes=minute)
            telemetry.write_points(
                session=session, points=[Point(device.id, "temperature", at, value)], seen_at=at
            )
            session.commit()
        _, message = await asyncio.wait_for(points.get(), 5)
        return await asyncio.to_thread(evaluator.on_telemetry, message)

    assert await write(0, 20) == []
    fired = await write(1, 35)
    assert [t.kind for t in fired] == ["FIRED"]
    _, announced = await asyncio.wait_for(triggered.get(), 5)
    assert (announced["type"], announced["rule_id"]) == ("TRIGGERED", str(rule.id))
    assert await write(2, 36) == []  # still hot: no second alert
    with Session(engine) as session:
        open_alerts = alerts.active_alerts(session=session, device_id=device.id)
        assert [(a.title, a.metric_value) for a in open_alerts] == [("Hot", 35.0)]
    cleared = await write(3, 24)
    assert [t.kind for t in cleared] == ["CLEARED"]
    with Session(engine) as session:
        assert alerts.active_alerts(session=session) == []
        history = alerts.alert_history(
            session=session, start=start - timedelta(hours=1), end=utcnow() + timedelta(hours=1)
        )
        assert [(a.status, a.resolution) for a in history] == [
            (AlertStatus.RESOLVED, "cleared by the rule")
        ]


def test_only_one_process_leads_on_postgres(engine: Engine) -> None:
    with engine.connect() as first, engine.connect() as second:
        assert try_lead(first, EVALUATOR)
        expected = engine.dialect.name != "postgresql"  # SQLite: one process, always leads
        assert try_lead(second, EVALUATOR) is expected
        # each singleton job has its own lock: the rollups can lead elsewhere
        assert try_lead(second, ROLLUPS)
