"""Per-device token buckets for ingest (SPEC 8.1: by default 10 messages/s, 600 at once).

Each device has a bucket of at most `burst` tokens that refills at `rate` tokens a second;
every message takes one, and a message finding the bucket empty is over the limit. The
limits are per device type (the `device_type_settings` table, where None falls back to
the environment's defaults); the limiter caches them and reads them again at most every
REFRESH_SECONDS. A bucket that would be full again is forgotten: a new bucket starts
full, so dropping it changes nothing, and memory follows the devices busy now rather
than every device ever heard.

Pure: no database and no clock of its own (`now` is given, in seconds), one thread.
"""

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import limits

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0  # how stale the per-type limits may get
REPORT_SECONDS = 60.0  # one report (log line, rate_limited_at) per device per this
SWEEP_SECONDS = 60.0  # how often buckets that filled up again are forgotten

# one device type's (notation, burst) overrides; None keeps the default
TypeOverride = tuple[str | None, int | None]


def per_second(notation: str) -> float:
    """Messages a second allowed by a `limits` notation ("10/second" -> 10.0).

    ValueError naming the notation unless it is exactly one rate of at least 1 message.
    """
    try:
        rates = limits.parse_many(notation)
    except (TypeError, ValueError):
        rates = []
    if len(rates) != 1 or rates[0].amount < 1:
        raise ValueError(f"'{notation}' is not a rate such as '10/second' or '600/minute'")
    return rates[0].amount / rates[0].get_expiry()


@dataclass(frozen=True)
class Limit:
    """How fast one device may publish: `rate` messages a second, `burst` at once."""

    notation: str
    rate: float
    burst: int

    @classmethod
    def parse(cls, notation: str, burst: int) -> "Limit":
        """The limit for a `limits` notation and a burst; ValueError when either is bad."""
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst {burst!r} is not a whole number of 1 or more")
        return cls(notation, per_second(notation), burst)

    def __str__(self) -> str:
        return f"{self.notation}, burst {self.burst}"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    limit: Limit

    def level(self, now: float) -> float:
        """Tokens at `now`: what was left plus the refill since, capped at the burst."""
        refill = max(0.0, now - self.at) * self.limit.rate
        return min(float(self.limit.burst), self.tokens + refill)


class RateLimiter:
    """One token bucket per device id, with limits per device type."""

    def __init__(self, rate_limit: str, burst: int) -> None:
        """Defaults for every device type without an override; ValueError when bad."""
        self.default = Limit.parse(rate_limit, burst)
        self._by_type: dict[str, Limit] = {}
        self._buckets: dict[uuid.UUID, _Bucket] = {}
        self._reported: dict[uuid.UUID, float] = {}
        self._refresh_at: float | None = None
        self._sweep_at: float | None = None

    @property
    def tracked(self) -> int:
        """How many devices have a bucket (the others are full by definition)."""
        return len(self._buckets)

    def refresh(self, now: float, load: Callable[[], Mapping[str, TypeOverride]]) -> None:
        """Read the per-type overrides with `load`, unless the last read is recent enough."""
        if self._refresh_at is not None and now < self._refresh_at:
            return
        overrides = load()  # may raise: then the next call tries again
        self._by_type = {kind: self._merged(kind, o) for kind, o in overrides.items()}
        self._refresh_at = now + REFRESH_SECONDS

    def _merged(self, device_type: str, override: TypeOverride) -> Limit:
        notation, burst = override
        try:
            return Limit.parse(
                self.default.notation if notation is None else notation,
                self.default.burst if burst is None else burst,
            )
        except ValueError as exc:  # stored by hand: the service refuses such values
            logger.warning(
                "device type %s: %s; its devices get the default limit", device_type, exc
            )
            return self.default

    def limit_for(self, device_type: str) -> Limit:
        """The limit that applies to devices of this type."""
        return self._by_type.get(device_type, self.default)

    def allow(self, device_id: uuid.UUID, device_type: str, now: float) -> bool:
        """Take a token for one message of this device; False when it is over its limit."""
        limit = self.limit_for(device_type)
        bucket = self._buckets.get(device_id)
        if bucket is None:
            bucket = self._buckets[device_id] = _Bucket(float(limit.burst), now, limit)
        else:
            bucket.limit = limit  # a new override applies to the tokens from now on
            bucket.tokens, bucket.at = bucket.level(now), now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        if self._sweep_at is None or now >= self._sweep_at:
            self._sweep(now)
        return allowed

    def report_due(self, device_id: uuid.UUID, now: float) -> bool:
        """True at most once per REPORT_SECONDS for a device: time to log and record a refusal."""
        last = self._reported.get(device_id)
        if last is not None and now - last < REPORT_SECONDS:
            return False
        self._reported[device_id] = now
        return True

    def _sweep(self, now: float) -> None:
        """Forget full buckets and old reports, so memory follows the busy devices only."""
        self._sweep_at = now + SWEEP_SECONDS
        self._buckets = {
            device_id: bucket
            for device_id, bucket in self._buckets.items()
            if bucket.level(now) < bucket.limit.burst
        }
        self._reported = {
            device_id: at for device_id, at in self._reported.items() if now - at < REPORT_SECONDS
        }
