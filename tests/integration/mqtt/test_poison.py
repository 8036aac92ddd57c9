"""A message the database refuses every time costs itself only: the rest of its batch is
stored, it is counted and acknowledged, and ingest goes on.

The database itself makes the message fail: a trigger, created in this test's own
database, raises for one magic value, as a constraint or a bug would for a real one.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from app.core.models import DeviceCreate, TelemetryPoint
from app.mqtt.ingest import IngestWorker
from app.services import devices
from bench.services import IotdeckBroker
from tests.integration.conftest import Publish
from tests.waiting import wait_until

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

POISON = 666.0
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
REFUSE_POISON = f"""
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.value = {POISON} THEN
        RAISE EXCEPTION 'poison value %', NEW.value;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON device_telemetry
    FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


def _poisoned() -> float:
    return REGISTRY.get_sample_value("ingest_poison_messages_total") or 0.0


def _rejected_as_poison() -> float:
    return REGISTRY.get_sample_value("telemetry_rejected_total", {"reason": "poison"}) or 0.0


def _values(engine: Engine, device_id: uuid.UUID) -> list[float]:
    with Session(engine) as session:
        query = select(TelemetryPoint.value).where(TelemetryPoint.device_id == device_id)
        return sorted(session.exec(query.order_by(col(TelemetryPoint.time))).all())


def _worker(mosquitto: IotdeckBroker, client_id: str) -> IngestWorker:
    # batches of up to a second: the burst below arrives as one batch
    worker = IngestWorker(mosquitto.service_address(), client_id=client_id, batch_ms=1000)
    worker.start()
    assert worker.wait_connected(10)
    return worker


@pytest.fixture
def device_id(engine: Engine) -> uuid.UUID:
    """A device in a database whose telemetry table refuses the value POISON."""
    with Session(engine) as session:
        session.exec(text(REFUSE_POISON))  # type: ignore[call-overload]
        device = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
        session.commit()
        return device.id


def test_a_poison_message_is_rejected_alone_and_acknowledged(
    engine: Engine,
    mosquitto: IotdeckBroker,
    publish: Publish,
    device_id: uuid.UUID,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = f"devices/{device_id}/telemetry"
    values = [float(i) for i in range(20)]
    values[7] = POISON

    def send(index: int, value: float) -> None:
        stamp = START + timedelta(seconds=index)
        publish(topic, {"timestamp": stamp.isoformat(), "metrics": [{"name": "t", "value": value}]})

    poisoned, rejected = _poisoned(), _rejected_as_poison()
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"  # its broker session outlives one worker
    worker = _worker(mosquitto, client_id)
    try:
        with caplog.at_level(logging.WARNING, logger="app.mqtt.ingest"):
            for index, value in enumerate(values):
                send(index, value)
            good = sorted(v for v in values if v != POISON)
            wait_until(lambda: _values(engine, device_id) == good, timeout=30)
            wait_until(lambda: _poisoned() == poisoned + 1)
        assert _rejected_as_poison() == rejected + 1
        # the whole burst failed together first, then was split down to the culprit
        splits = [r for r in caplog.records if "committing it in parts" in r.getMessage()]
        assert splits and splits[0].args[0] > 1  # type: ignore[index]
        culprit = [r.getMessage() for r in caplog.records if ": poison: " in r.getMessage()]
        assert len(culprit) == 1
        assert topic in culprit[0] and f"poison value {POISON:g}" in culprit[0]
        # ingest goes on
        send(100, 100.0)
        wait_until(lambda: 100.0 in _values(engine, device_id))
    finally:
        worker.stop()
    # the poison was acknowledged: the broker does not hand it to the same session again
    worker = _worker(mosquitto, client_id)
    try:
        send(101, 101.0)
        wait_until(lambda: 101.0 in _values(engine, device_id))
        assert _poisoned() == poisoned + 1
        assert POISON not in _values(engine, device_id)
    finally:
        worker.stop()
