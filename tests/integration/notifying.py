"""A fired alert and a dispatcher on this test's loop: shared by the notification tests
(delivery over SMTP and webhooks, circuit breakers per target)."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from app.core import bus
from app.core.models import DeviceCreate, NotificationDelivery, utcnow
from app.services import alerts, devices, events, notifications, rules
from app.services.notifications import Backoff
from app.services.rules import RuleInput
from app.workers.notifications import Dispatcher, Sender, WebhookSender
from rules.parser import parse_rule
from tests.waiting import wait_until

KEY = b"a webhook signing key shared with the receivers"
FAST = Backoff(base=0.2, cap=2.0, max_attempts=5)


def fire(engine: Engine, targets: list[tuple[str, str]]) -> uuid.UUID:
    """Open an alert of a critical "Overheat" rule on thermostat-3, notifying `targets`.

    The deliveries come from the rule text, through the parser and `schedule`, in the
    alert's own transaction: what the evaluator does when a rule fires.
    """
    notify = ", ".join(f'{channel} "{target}"' for channel, target in targets)
    text = (
        'rule "Overheat" on type "thermostat" when temperature > 30 severity critical'
        f' message "{{device.name}}: {{value}}°C" notify {notify}'
    )
    with Session(engine, expire_on_commit=False) as session:
        device = devices.create_device(
            session=session, data=DeviceCreate(name="thermostat-3", type="thermostat")
        )
        stored = rules.create_rule(session=session, data=RuleInput(expression=text))
        rule = parse_rule(stored.expression)
        at = utcnow()
        message = notifications.render_message(
            rule.message,
            rule_name=stored.name,
            device_name=device.name,
            device_id=device.id,
            value=31.5,
            metric="temperature",
            severity=stored.severity,
            at=at,
        )
        alert = alerts.open_alert(
            session=session,
            rule=stored,
            device_id=device.id,
            at=at,
            message=message,
            metric_name="temperature",
            metric_value=31.5,
        )
        assert alert is not None
        notifications.schedule(session, alert=alert, notify=rule.notify)
        events.emit(session, bus.ALERTS, {"type": "TRIGGERED", "alert_id": str(alert.id)})
        session.commit()
        return alert.id


def deliveries(engine: Engine, alert_id: uuid.UUID) -> dict[str, NotificationDelivery]:
    """The alert's deliveries by target."""
    with Session(engine) as session:
        return {d.target: d for d in notifications.deliveries_for_alert(session, alert_id)}


async def eventually(condition: Callable[[], object], timeout: float = 15.0) -> Any:
    """wait_until, off the event loop (the dispatcher under test runs on it)."""
    return await asyncio.to_thread(wait_until, condition, timeout)


@asynccontextmanager
async def running(
    senders: dict[str, Sender], *, hub: bus.Hub | None = None, **options: Any
) -> AsyncIterator[Dispatcher]:
    """A dispatcher running on this loop until the block ends."""
    options = {"timeout": 5.0, "backoff": FAST, "poll_seconds": 0.05} | options
    dispatcher = Dispatcher(senders, **options)
    task = asyncio.create_task(dispatcher.run(hub))
    try:
        yield dispatcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def webhooks(timeout: float = 5.0) -> dict[str, Sender]:
    """A webhook sender signing with KEY, allowed to reach the local receivers."""
    return {"webhook": WebhookSender(KEY, timeout=timeout, allow_private=True)}
