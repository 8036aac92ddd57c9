"""Rule evaluation: committed points in, alerts out (issue 5, first cut).

The evaluator listens to the bus's telemetry channels, so it sees exactly the points that
were committed, whichever ingest process wrote them. Exactly one process evaluates: the
one holding a PostgreSQL advisory lock (SQLite means one process anyway); the lock goes
with its connection when that process dies, and another takes over. Transitions become
alerts through the alerts service in one transaction per batch, announced on `iot:alerts`
after the commit.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy import Connection, text
from sqlmodel import Session, select

from app import bus, db
from app.models import AlertRule, Device
from app.services import alerts, events, rules
from rules.compiler import CompiledRule, compile_rule
from rules.engine import Engine, Transition
from rules.parser import parse_rule

logger = logging.getLogger(__name__)

# one number shared by every iotdeck process: whoever holds this advisory lock evaluates
ADVISORY_LOCK_KEY = 0x10DEC0DE


def _compiled(stored: Iterable[AlertRule]) -> list[CompiledRule]:
    compiled = []
    for rule in stored:
        try:
            compiled.append(compile_rule(str(rule.id), parse_rule(rule.expression)))
        except Exception:  # a stored rule that no longer compiles must not stop the others
            logger.exception("rule %s (%s) skipped: it does not compile", rule.name, rule.id)
    return compiled


class Evaluator:
    """One rule engine fed with committed points; writes the alerts it decides."""

    def __init__(self) -> None:
        self.engine = Engine([])
        self._types: dict[str, str] = {}
        self._rules: dict[str, AlertRule] = {}

    def load(self) -> None:
        """Read the enabled rules and the device types (at start, and when rules change)."""
        with Session(db.get_engine(), expire_on_commit=False) as session:
            stored = rules.list_rules(session=session, enabled_only=True)
            self._types = {str(device.id): device.type for device in session.exec(select(Device))}
        self._rules = {str(rule.id): rule for rule in stored}
        self.engine.set_rules(_compiled(stored))
        logger.info("rule engine: %d enabled rule(s)", len(self._rules))

    def _device_type(self, device_id: str) -> str | None:
        if device_id not in self._types:
            with Session(db.get_engine()) as session:
                device = session.get(Device, uuid.UUID(device_id))
                if device is None:
                    return None
                self._types[device_id] = device.type
        return self._types[device_id]

    def on_telemetry(self, message: bus.Message) -> list[Transition]:
        """Evaluate one bus telemetry message; apply what fired or cleared."""
        device_id = message["device_id"]
        device_type = self._device_type(device_id)
        if device_type is None:
            return []
        found: list[Transition] = []
        for point in message["points"]:
            at = datetime.fromisoformat(point["time"])
            found += self.engine.on_point(
                device_id, device_type, point["metric"], at, float(point["value"])
            )
        self.apply(found)
        return found

    def tick(self, now: datetime) -> list[Transition]:
        """Time-driven evaluation (`for`, `nodata`)."""
        found = self.engine.tick(now)
        self.apply(found)
        return found

    def apply(self, transitions: list[Transition]) -> None:
        """Open an alert per FIRED, resolve the open one per CLEARED, in one transaction."""
        if not transitions:
            return
        with db.session_scope() as session:
            for transition in transitions:
                stored = self._rules.get(transition.rule_id)
                if stored is None:
                    continue
                device_id = uuid.UUID(transition.device_id)
                if transition.kind == "FIRED":
                    self._fire(session, stored, device_id, transition)
                else:
                    open_one = alerts.open_alert_for(
                        session=session, rule_id=stored.id, device_id=device_id
                    )
                    if open_one is not None:
                        alerts.resolve_alert(
                            session=session,
                            alert_id=open_one.id,
                            user_id=None,
                            message="cleared by the rule",
                        )

    @staticmethod
    def _fire(session: Session, stored: AlertRule, device_id: uuid.UUID, t: Transition) -> None:
        alert = alerts.open_alert(
            session=session,
            rule=stored,
            device_id=device_id,
            at=t.at,
            metric_name=t.metric,
            metric_value=t.value,
        )
        if alert is not None:
            events.emit(
                session,
                bus.ALERTS,
                {
                    "type": "TRIGGERED",
                    "alert_id": str(alert.id),
                    "rule_id": str(stored.id),
                    "device_id": str(device_id),
                    "severity": str(alert.severity),
                    "title": alert.title,
                    "at": alert.triggered_at.isoformat(),
                },
            )


def try_lead(connection: Connection) -> bool:
    """Take the evaluator's advisory lock on `connection` (always True on SQLite)."""
    if connection.dialect.name != "postgresql":
        return True
    return bool(
        connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        ).scalar()
    )


TICK_SECONDS = 10.0
RETRY_LEAD_SECONDS = 5.0


async def run_evaluator(hub: bus.Hub) -> None:
    """Become the evaluator when this process can take the lock, then evaluate forever.

    The engine is not thread-safe: points, rule reloads and the clock-driven tick take
    turns through one lock, each running off the event loop.
    """
    connection = await asyncio.to_thread(_autocommit_connection)
    try:
        while not await asyncio.to_thread(try_lead, connection):
            await asyncio.sleep(RETRY_LEAD_SECONDS)
        logger.info("this process evaluates the rules")
        evaluator = Evaluator()
        await asyncio.to_thread(evaluator.load)
        turn = asyncio.Lock()
        watched = hub.subscribe(lambda c: c.startswith("iot:telemetry:") or c == bus.RULES)
        ticking = asyncio.create_task(_tick(evaluator, turn), name="rule-evaluator-tick")
        try:
            async for channel, message in watched:
                work = evaluator.load if channel == bus.RULES else evaluator.on_telemetry
                await _run(turn, work, *([] if channel == bus.RULES else [message]))
        finally:
            watched.close()
            ticking.cancel()
    finally:
        await asyncio.to_thread(connection.close)  # releases the lock: another process leads


async def _tick(evaluator: Evaluator, turn: asyncio.Lock) -> None:
    while True:
        await asyncio.sleep(TICK_SECONDS)
        await _run(turn, lambda: evaluator.tick(datetime.now(UTC)))


async def _run(turn: asyncio.Lock, work: Callable[..., object], *args: object) -> None:
    async with turn:
        try:
            await asyncio.to_thread(work, *args)
        except Exception:  # one bad message or a database blip must not stop evaluation
            logger.exception("rule evaluation failed; carrying on")


def _autocommit_connection() -> Connection:
    # autocommit: holding the lock must not hold a transaction open (and vacuum back)
    return db.get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
