"""The per-device rate limit of ingest, against a real Mosquitto and real databases."""

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from app.core.models import Device, DeviceCreate, DeviceStatus, TelemetryPoint
from app.mqtt.ingest import IngestWorker
from app.services import devices
from tests.integration.conftest import Publish
from tests.waiting import wait_until

pytestmark = pytest.mark.all_backends

BURST = 50
# one message a minute: no token comes back while the test runs, so the counts are exact
LIMITED = {"rate_limit": "1/minute", "rate_burst": BURST}
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _device(engine: Engine, name: str) -> uuid.UUID:
    with Session(engine) as session:
        created = devices.create_device(session=session, data=DeviceCreate(name=name, type="t"))
        session.commit()
        return created.id


def _count(engine: Engine, device_id: uuid.UUID) -> int:
    with Session(engine) as session:
        query = select(func.count()).where(TelemetryPoint.device_id == device_id)
        return session.exec(query).one()


def _rate_limited() -> float:
    return REGISTRY.get_sample_value("telemetry_rejected_total", {"reason": "rate_limited"}) or 0.0


def _send(publish: Publish, device_id: uuid.UUID, indexes: range) -> None:
    for index in indexes:
        stamp = (START + timedelta(seconds=index)).isoformat()
        publish(f"devices/{device_id}/telemetry", {"n": index, "ts": stamp})


@pytest.mark.parametrize("ingest", [LIMITED], indirect=True)
def test_a_burst_is_stored_whole_and_more_is_refused_for_that_device_only(
    engine: Engine, ingest: IngestWorker, publish: Publish, caplog: pytest.LogCaptureFixture
) -> None:
    del ingest
    noisy, calm = _device(engine, "noisy"), _device(engine, "calm")
    before = _rate_limited()
    _send(publish, noisy, range(BURST))
    wait_until(lambda: _count(engine, noisy) == BURST)
    with caplog.at_level(logging.WARNING, logger="app.mqtt.ingest"):
        _send(publish, noisy, range(BURST, BURST + 9))
        publish(f"devices/{noisy}/status", b"offline")  # every kind of message counts
        _send(publish, calm, range(5))
        wait_until(lambda: _count(engine, calm) == 5)
        wait_until(lambda: _rate_limited() == before + 10)
    assert _count(engine, noisy) == BURST
    logged = [r for r in caplog.records if "rate_limited" in r.getMessage()]
    assert len(logged) == 1 and str(noisy) in logged[0].getMessage()  # once a minute
    with Session(engine) as session:
        refused, spared = session.get(Device, noisy), session.get(Device, calm)
        assert refused is not None and spared is not None
        assert refused.status == DeviceStatus.ONLINE  # its refused `offline` changed nothing
        assert refused.rate_limited_at is not None
        assert spared.rate_limited_at is None
