"""What dashboard widgets read, on every storage backend: lines, latest values, bars, device
tables, alerts, fleet counts and pickers, many devices at a time in one query."""

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlmodel import Session

from app.core.errors import ValidationError
from app.core.models import AlertStatus, Device, DeviceCreate, DeviceStatus, utcnow
from app.dashboards import data
from app.services import alerts, charts, devices, rules, telemetry
from app.services.rules import RuleInput
from app.services.telemetry import Point

pytestmark = pytest.mark.all_backends

# off every bucket boundary
NOW = datetime(2026, 11, 29, 10, 37, 12, 345678, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ANY_ID = str(uuid.uuid4())


def _device(session: Session, name: str, type_: str = "thermostat") -> Device:
    created = devices.create_device(session=session, data=DeviceCreate(name=name, type=type_))
    session.commit()
    return created


def _write(session: Session, points: list[Point], seen_at: datetime | None = NOW) -> None:
    telemetry.write_points(session=session, points=points, seen_at=seen_at)
    session.commit()


@contextmanager
def _statements(session: Session) -> Iterator[list[str]]:
    """The SQL statements run on the session's engine meanwhile."""
    seen: list[str] = []
    engine = session.get_bind()

    def record(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def thermostat(session: Session) -> Device:
    """A device with `temperature` k at NOW - (30 - k) minutes (k = 0..29) and an old
    `setpoint` of 10."""
    device = _device(session, "t1")
    points = [
        Point(device.id, "temperature", NOW - (30 - k) * MINUTE, float(k), "°C") for k in range(30)
    ]
    points.append(Point(device.id, "setpoint", NOW - timedelta(hours=3), 10.0, "°C"))
    _write(session, points)
    return device


# -- series ------------------------------------------------------------------------------------
def test_a_sparse_metric_is_its_raw_samples(session: Session, thermostat: Device) -> None:
    line = data.series(
        session=session,
        device_id=str(thermostat.id),
        metric="temperature",
        expression=None,
        start=NOW - 10 * MINUTE,
        end=NOW,
    )
    assert (line.label, line.unit, line.bucket_seconds) == ("temperature", "°C", None)
    assert line.times == [NOW - (30 - k) * MINUTE for k in range(20, 30)]
    assert line.values == [float(k) for k in range(20, 30)]


def test_a_dense_metric_is_bucket_averages_within_max_points(
    session: Session, thermostat: Device
) -> None:
    where = {"session": session, "device_id": str(thermostat.id), "expression": None}
    line = data.series(
        **where, metric="temperature", start=NOW - timedelta(hours=1), end=NOW, max_points=5
    )
    expected = charts.chart_data(
        session=session,
        device_id=thermostat.id,
        metric_name="temperature",
        start=NOW - timedelta(hours=1),
        end=NOW,
        max_points=5,
    )
    assert line.bucket_seconds == expected.bucket_seconds is not None
    assert 0 < len(line.times) <= 5
    assert line.times == [a.bucket for a in expected.aggregates]
    assert line.values == pytest.approx([a.avg for a in expected.aggregates])


def test_an_expression_is_evaluated_at_each_sample_with_its_windows_full(
    session: Session, thermostat: Device
) -> None:
    text = "avg(temperature, 2m) - setpoint"
    line = data.series(
        session=session,
        device_id=str(thermostat.id),
        metric=None,
        expression=text,
        start=NOW - 10 * MINUTE,
        end=NOW,
    )
    assert (line.label, line.unit, line.bucket_seconds) == (text, None, None)
    assert line.times == [NOW - (30 - k) * MINUTE for k in range(20, 30)]
    # the first window reaches back before the range: its earlier point was loaded too
    assert line.values == pytest.approx([(2 * k - 1) / 2 - 10 for k in range(20, 30)])


def test_a_dense_expression_is_evaluated_at_round_times_within_max_points(
    session: Session, thermostat: Device
) -> None:
    start = NOW - timedelta(hours=1)
    points = [
        Point(thermostat.id, "power", start + timedelta(seconds=3 * i), float(i % 50))
        for i in range(1200)
    ]
    _write(session, points)
    line = data.series(
        session=session,
        device_id=str(thermostat.id),
        metric=None,
        expression="max(power, 10m)",
        start=start,
        end=NOW,
        max_points=50,
    )
    assert line.bucket_seconds == charts.bucket_width(NOW - start, 50) == 300
    assert len(line.times) == 12
    assert all(t.timestamp() % 300 == 0 and start <= t <= NOW for t in line.times)
    assert all(v is not None and 0 <= v <= 49 for v in line.values)


def test_an_expression_without_data_is_an_empty_line_and_a_constant_is_flat(
    session: Session, thermostat: Device
) -> None:
    where = {"session": session, "device_id": str(thermostat.id), "metric": None}
    span = {"start": NOW - timedelta(hours=1), "end": NOW}
    assert data.series(**where, expression="avg(missing, 5m)", **span).times == []
    flat = data.series(**where, expression="2 * 3", **span, max_points=20)
    assert 0 < len(flat.times) <= 20 and set(flat.values) == {6.0}


# -- latest ------------------------------------------------------------------------------------
def test_latest_of_a_metric_and_of_an_expression(session: Session, thermostat: Device) -> None:
    where = {"session": session, "device_id": str(thermostat.id), "now": NOW}
    assert data.latest(**where, metric="temperature", expression=None) == (NOW - MINUTE, 29.0)
    assert data.latest(**where, metric=None, expression="avg(temperature, 3m)") == (NOW, 28.5)
    # a bare metric is its newest value however old it is
    assert data.latest(**where, metric=None, expression="setpoint * 2") == (NOW, 20.0)
    assert data.latest(**where, metric="humidity", expression=None) is None
    assert data.latest(**where, metric=None, expression="avg(temperature, 30s)") is None


# -- many devices ------------------------------------------------------------------------------
def test_bar_is_the_newest_value_of_each_device_of_the_type_in_one_query(
    session: Session,
) -> None:
    values = {"a": 5.0, "b": 30.0, "c": 12.0}
    made = {name: _device(session, name) for name in [*values, "silent"]}
    other = _device(session, "other", "meter")
    points = [Point(other.id, "temperature", NOW, 100.0)]
    for name, value in values.items():
        points += [
            Point(made[name].id, "temperature", NOW - timedelta(hours=1), 1000.0),
            Point(made[name].id, "temperature", NOW - MINUTE, value),
        ]
    _write(session, points)
    ask = {"session": session, "device_type": "thermostat", "metric": "temperature"}
    with _statements(session) as statements:
        rows = data.bar(**ask, sort="desc", limit=20)
    assert len(statements) == 1
    assert [(r.name, r.value, r.time) for r in rows] == [
        ("b", 30.0, NOW - MINUTE),
        ("c", 12.0, NOW - MINUTE),
        ("a", 5.0, NOW - MINUTE),
    ]
    assert rows[0].device_id == str(made["b"].id)
    assert [r.name for r in data.bar(**ask, sort="asc", limit=20)] == ["a", "c", "b"]
    assert [r.name for r in data.bar(**ask, sort="name", limit=2)] == ["a", "b"]
    assert data.bar(**{**ask, "metric": "humidity"}, sort="desc", limit=5) == []


@pytest.fixture
def fleet_devices(session: Session) -> dict[str, Device]:
    """alpha ONLINE, beta OFFLINE (seen 1 h ago), gamma OFFLINE (3 h ago), delta UNKNOWN,
    epsilon OFFLINE never seen, meter ONLINE (another type)."""
    made = {name: _device(session, name) for name in ("alpha", "beta", "gamma", "delta")}
    made["epsilon"] = _device(session, "epsilon")
    made["meter"] = _device(session, "meter", "meter")
    for name, age in (("alpha", 0), ("beta", 1), ("gamma", 3), ("meter", 0)):
        at = NOW - timedelta(hours=age)
        points = [
            Point(made[name].id, "temperature", at, 20.0 + age),
            Point(made[name].id, "humidity", at, 50.0 + age),
        ]
        _write(session, points, seen_at=at)
    for name in ("beta", "gamma", "epsilon"):
        devices.set_status(
            session=session, device_id=made[name].id, status=DeviceStatus.OFFLINE, at=NOW
        )
    session.commit()
    return made


def test_device_table_pages_by_name_with_latest_values_in_one_query(
    session: Session, fleet_devices: dict[str, Device]
) -> None:
    ask = {"session": session, "device_type": "thermostat", "status": None}
    with _statements(session) as statements:
        table = data.device_table(**ask, metrics=["temperature", "pressure"], offset=0, limit=10)
    assert len(statements) == 3  # the page, its values, the count
    assert table.total == 5
    assert [(r.name, r.status) for r in table.rows] == [
        ("alpha", "ONLINE"),
        ("beta", "OFFLINE"),
        ("delta", "UNKNOWN"),
        ("epsilon", "OFFLINE"),
        ("gamma", "OFFLINE"),
    ]
    assert [r.values for r in table.rows] == [
        {"temperature": 20.0},
        {"temperature": 21.0},
        {},
        {},
        {"temperature": 23.0},
    ]
    assert table.rows[0].device_id == str(fleet_devices["alpha"].id)
    assert table.rows[0].type == "thermostat"
    assert table.rows[1].last_seen == NOW - timedelta(hours=1)
    assert table.rows[2].last_seen is None
    page = data.device_table(**ask, metrics=[], offset=1, limit=2)
    assert ([r.name for r in page.rows], page.total) == (["beta", "delta"], 5)
    everyone = data.device_table(**{**ask, "device_type": None}, metrics=[], offset=0, limit=10)
    assert everyone.total == 6


def test_offline_devices_silent_longest_come_first(
    session: Session, fleet_devices: dict[str, Device]
) -> None:
    table = data.device_table(
        session=session,
        device_type=None,
        metrics=["humidity"],
        status="OFFLINE",
        offset=0,
        limit=10,
    )
    assert table.total == 3
    assert [(r.name, r.values) for r in table.rows] == [
        ("epsilon", {}),
        ("gamma", {"humidity": 53.0}),
        ("beta", {"humidity": 51.0}),
    ]


def test_fleet_counts_devices_by_status_and_open_alerts_by_severity(
    session: Session, fleet_devices: dict[str, Device]
) -> None:
    rule = rules.create_rule(
        session=session, data=RuleInput(expression='rule "Hot" when t > 1 severity critical')
    )
    for name in ("alpha", "beta"):
        alerts.open_alert(session=session, rule=rule, device_id=fleet_devices[name].id, at=NOW)
    session.commit()
    with _statements(session) as statements:
        counted = data.fleet(session=session)
    assert len(statements) == 2
    assert counted == data.Fleet(
        online=2,
        offline=3,
        total=6,
        open_by_severity={"INFO": 0, "WARNING": 0, "CRITICAL": 2},
    )


# -- alerts ------------------------------------------------------------------------------------
def test_open_alerts_newest_first_filtered_by_severity_device_and_type(session: Session) -> None:
    x, y = _device(session, "x"), _device(session, "y", "sensor")
    made = {
        name: rules.create_rule(
            session=session, data=RuleInput(expression=f'rule "{name}" when t > 1 severity {sev}')
        )
        for name, sev in (("Hot", "critical"), ("Dry", "info"), ("Cold", "warning"))
    }
    opened = {}
    for name, device, age in (("Hot", x, 3), ("Dry", x, 2), ("Cold", y, 1), ("Hot", y, 4)):
        at = NOW - age * MINUTE
        alert = alerts.open_alert(
            session=session, rule=made[name], device_id=device.id, at=at, message=f"{name}!"
        )
        assert alert is not None
        opened[name, device.name] = alert
    alerts.acknowledge_alert(session=session, alert_id=opened["Dry", "x"].id, user_id=None)
    alerts.resolve_alert(session=session, alert_id=opened["Hot", "y"].id, user_id=None)
    session.commit()

    def shown(**where: object) -> list[tuple[str, str | None]]:
        ask = {"severities": [], "device_id": None, "device_type": None, "limit": 10, **where}
        return [(r.rule_name, r.device_name) for r in data.alerts(session=session, **ask)]

    assert shown() == [("Cold", "y"), ("Dry", "x"), ("Hot", "x")]
    assert shown(severities=["CRITICAL", "INFO"]) == [("Dry", "x"), ("Hot", "x")]
    assert shown(device_id=str(y.id)) == [("Cold", "y")]
    assert shown(device_type="thermostat") == [("Dry", "x"), ("Hot", "x")]
    assert shown(limit=1) == [("Cold", "y")]
    [row] = data.alerts(
        session=session, severities=["INFO"], device_id=None, device_type=None, limit=5
    )
    assert row == data.AlertRow(
        alert_id=str(opened["Dry", "x"].id),
        rule_name="Dry",
        device_id=str(x.id),
        device_name="x",
        severity="INFO",
        state=str(AlertStatus.ACKNOWLEDGED),
        message="Dry!",
        fired_at=NOW - 2 * MINUTE,
    )


# -- pickers -----------------------------------------------------------------------------------
def test_pickers_offer_devices_types_and_the_metrics_they_sent(session: Session) -> None:
    now = utcnow()  # every metric of the fleet: the rollups plus the recent points
    b, a = _device(session, "b"), _device(session, "a")
    meter = _device(session, "m", "meter")
    _write(
        session,
        [
            Point(a.id, "temperature", now, 1.0),
            Point(b.id, "humidity", now, 1.0),
            Point(b.id, "temperature", now, 1.0),
            Point(meter.id, "energy", now, 1.0),
        ],
        seen_at=now,
    )
    assert data.device_choices(session=session, device_type="thermostat") == [
        (str(a.id), "a"),
        (str(b.id), "b"),
    ]
    assert [name for _, name in data.device_choices(session=session, device_type=None)] == [
        "a",
        "b",
        "m",
    ]
    assert data.type_choices(session=session) == ["meter", "thermostat"]
    ask = {"session": session, "device_id": None, "device_type": None}
    assert data.metric_choices(**{**ask, "device_id": str(a.id)}) == ["temperature"]
    assert data.metric_choices(**{**ask, "device_type": "thermostat"}) == [
        "humidity",
        "temperature",
    ]
    assert data.metric_choices(**{**ask, "device_type": "nothing"}) == []
    assert data.metric_choices(**ask) == ["energy", "humidity", "temperature"]


# -- bad input ---------------------------------------------------------------------------------
_VALID: dict[Callable[..., object], dict[str, object]] = {
    data.latest: {"device_id": ANY_ID, "metric": "t", "expression": None, "now": NOW},
    data.series: {
        "device_id": ANY_ID,
        "metric": "t",
        "expression": None,
        "start": NOW - MINUTE,
        "end": NOW,
    },
    data.bar: {"device_type": "t", "metric": "t", "sort": "asc", "limit": 5},
    data.device_table: {
        "device_type": None,
        "metrics": [],
        "status": None,
        "offset": 0,
        "limit": 5,
    },
    data.alerts: {"severities": [], "device_id": None, "device_type": None, "limit": 5},
    data.metric_choices: {"device_id": None, "device_type": None},
    data.device_choices: {"device_type": None},
}


@pytest.mark.parametrize(
    ("field", "call", "bad"),
    [
        ("device", data.latest, {"device_id": "nope"}),
        ("device", data.series, {"device_id": "1"}),
        ("metric", data.latest, {"metric": None}),
        ("metric", data.series, {"expression": "t"}),
        ("metric", data.series, {"metric": "a b"}),
        ("limit", data.series, {"max_points": 0}),
        ("deviceType", data.bar, {"device_type": "Bad Type"}),
        ("metric", data.bar, {"metric": ""}),
        ("sort", data.bar, {"sort": "up"}),
        ("limit", data.bar, {"limit": 0}),
        ("status", data.device_table, {"status": "ASLEEP"}),
        ("metrics", data.device_table, {"metrics": [f"m{i}" for i in range(11)]}),
        ("metric", data.device_table, {"metrics": ["ok", "not ok"]}),
        ("offset", data.device_table, {"offset": -1}),
        ("device", data.alerts, {"device_id": "x"}),
        ("deviceType", data.alerts, {"device_type": "X"}),
        ("severities", data.alerts, {"severities": ["LOUD"]}),
        ("device", data.metric_choices, {"device_id": "x"}),
        ("deviceType", data.metric_choices, {"device_type": "a b"}),
        ("deviceType", data.device_choices, {"device_type": "?"}),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    session: Session, field: str, call: Callable[..., object], bad: dict[str, object]
) -> None:
    with pytest.raises(ValidationError) as refused:
        call(session=session, **{**_VALID[call], **bad})
    assert refused.value.field == field


def test_a_bad_expression_is_refused_with_the_rule_languages_reason(
    session: Session, thermostat: Device
) -> None:
    with pytest.raises(ValidationError) as refused:
        data.latest(
            session=session,
            device_id=str(thermostat.id),
            metric=None,
            expression="temperature > 3",
            now=NOW,
        )
    assert refused.value.field == "expression"
    assert "is a condition" in refused.value.reason
