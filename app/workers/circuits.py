"""A circuit breaker per notification target, so a dead receiver stops costing attempts.

A target is a channel and its destination: a webhook's host, port and path (not its query
or credentials), an e-mail address. After `threshold` failed attempts in a row its circuit
opens: the dispatcher then sends nothing to it and puts each due delivery off until the
cooldown ends ("circuit open: 5 failures in a row, next try at 14:03:27 UTC" on the
alert); the attempt it did not make is not counted, so nothing is given up for it. After
the cooldown one delivery goes through (half-open): its success closes the circuit and
makes the deliveries put off due at once; its failure doubles the cooldown.

The circuits live in the memory of each dispatcher process (`iotdeck serve`): every
process learns on its own that a target is down, after `threshold` failures of its own,
and a restart forgets. Only targets that failed are kept; a success forgets the target.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from app.core import metrics, outbound
from app.core.models import utcnow
from app.core.retries import CircuitBreaker, clock_time
from app.services.notifications import Claim


@dataclass(frozen=True)
class CircuitPolicy:
    """When a target's circuit opens, and for how long at first and at most."""

    threshold: int = 5
    cooldown: timedelta = timedelta(minutes=1)
    max_cooldown: timedelta = timedelta(minutes=30)


DEFAULT_CIRCUIT = CircuitPolicy()


def target_key(channel: str, target: str) -> str:
    """The destination a delivery goes to, as its circuit is known: `webhook host:port/path`."""
    if channel == "webhook":
        parts = urlsplit(target.strip())
        host = parts.netloc.rpartition("@")[2].lower()  # credentials are not the place
        return f"webhook {host}{parts.path or '/'}"
    return f"{channel} {target.strip().lower()}"


def _shown(claim: Claim) -> str:
    # logs get a webhook's host only: URLs carry tokens
    where = outbound.host_only(claim.target) if claim.channel == "webhook" else claim.target
    return f"{claim.channel} to {where}"


class TargetCircuits:
    """The circuits of one dispatcher, by target; used on its event loop only."""

    def __init__(self, policy: CircuitPolicy = DEFAULT_CIRCUIT) -> None:
        self.policy = policy
        self._breakers: dict[str, CircuitBreaker] = {}
        self._held: dict[str, dict[uuid.UUID, datetime]] = {}  # deliveries put off, by target

    def allow(self, claim: Claim) -> bool:
        """Whether to try `claim` now: its circuit is closed, or half-open for this one."""
        breaker = self._breakers.get(target_key(claim.channel, claim.target))
        return breaker is None or breaker.allow()

    def failed(self, claim: Claim, reason: str) -> None:
        """An attempt to the target failed in a way that trying again may cure."""
        key = target_key(claim.channel, claim.target)
        breaker = self._breakers.get(key)
        if breaker is None:
            gauge = metrics.NOTIFICATION_CIRCUIT_OPEN.labels(claim.channel)
            breaker = self._breakers[key] = CircuitBreaker(
                _shown(claim),
                threshold=self.policy.threshold,
                cooldown=self.policy.cooldown,
                max_cooldown=self.policy.max_cooldown,
                clock=utcnow,
                on_change=lambda is_open: gauge.inc() if is_open else gauge.dec(),
            )
        breaker.failure(reason)

    def succeeded(self, claim: Claim) -> dict[uuid.UUID, datetime]:
        """The target answered: its circuit closes; the deliveries it put off, to release."""
        key = target_key(claim.channel, claim.target)
        breaker = self._breakers.pop(key, None)
        if breaker is not None:
            breaker.success()
        return self._held.pop(key, {})

    def hold(self, claim: Claim) -> tuple[str, datetime]:
        """Put `claim` off while its circuit is open: the reason to show, and until when."""
        key = target_key(claim.channel, claim.target)
        breaker = self._breakers[key]
        until = breaker.retry_at or utcnow()
        self._held.setdefault(key, {})[claim.delivery_id] = until
        reason = f"circuit open: {breaker.failures} failures in a row, next try at "
        return reason + clock_time(until), until
