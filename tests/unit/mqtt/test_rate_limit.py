"""The per-device token buckets, driven by an injected clock (seconds)."""

import uuid

import pytest

from app.mqtt.rate_limit import (
    REFRESH_SECONDS,
    REPORT_SECONDS,
    SWEEP_SECONDS,
    RateLimiter,
    TypeOverride,
    per_second,
)

DEVICE = uuid.uuid4()


def _passed(limiter: RateLimiter, count: int, now: float, device: uuid.UUID = DEVICE) -> int:
    return sum(limiter.allow(device, "thermostat", now) for _ in range(count))


def test_a_full_burst_passes_and_the_next_message_is_refused() -> None:
    limiter = RateLimiter("10/second", 600)
    assert _passed(limiter, 600, now=0.0) == 600
    assert not limiter.allow(DEVICE, "thermostat", 0.0)


def test_one_second_later_ten_more_pass() -> None:
    limiter = RateLimiter("10/second", 600)
    _passed(limiter, 601, now=0.0)
    assert _passed(limiter, 11, now=1.0) == 10


def test_the_refill_never_exceeds_the_burst() -> None:
    limiter = RateLimiter("10/second", 600)
    _passed(limiter, 600, now=0.0)
    assert _passed(limiter, 700, now=3600.0) == 600


def test_each_device_has_its_own_bucket() -> None:
    limiter = RateLimiter("1/minute", 3)
    _passed(limiter, 4, now=0.0)
    assert _passed(limiter, 3, now=0.0, device=uuid.uuid4()) == 3


def test_an_override_applies_to_its_type_only() -> None:
    limiter = RateLimiter("10/second", 600)
    overrides: dict[str, TypeOverride] = {"camera": ("100/second", 5), "meter": (None, 2)}
    limiter.refresh(0.0, lambda: overrides)
    camera, meter, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert sum(limiter.allow(camera, "camera", 0.0) for _ in range(6)) == 5
    assert sum(limiter.allow(camera, "camera", 0.02) for _ in range(3)) == 2
    # None keeps the default: the meter has the default rate with its own burst
    assert sum(limiter.allow(meter, "meter", 0.0) for _ in range(3)) == 2
    assert sum(limiter.allow(meter, "meter", 0.1) for _ in range(2)) == 1
    assert sum(limiter.allow(other, "thermostat", 0.0) for _ in range(601)) == 600


def test_overrides_are_read_again_only_after_the_refresh_interval() -> None:
    limiter = RateLimiter("10/second", 600)
    reads: list[float] = []

    def load() -> dict[str, TypeOverride]:
        reads.append(0.0)
        return {"camera": ("1/second", 1 + len(reads))}

    limiter.refresh(0.0, load)
    limiter.refresh(REFRESH_SECONDS - 1, load)
    assert len(reads) == 1
    assert limiter.limit_for("camera").burst == 2
    limiter.refresh(REFRESH_SECONDS, load)
    assert len(reads) == 2
    assert limiter.limit_for("camera").burst == 3


def test_a_failed_read_is_tried_again_on_the_next_call() -> None:
    limiter = RateLimiter("10/second", 600)

    def broken() -> dict[str, TypeOverride]:
        raise ConnectionError("database away")

    with pytest.raises(ConnectionError):
        limiter.refresh(0.0, broken)
    limiter.refresh(0.1, lambda: {"camera": (None, 7)})
    assert limiter.limit_for("camera").burst == 7


def test_a_bad_stored_override_falls_back_to_the_default() -> None:
    limiter = RateLimiter("10/second", 600)
    limiter.refresh(0.0, lambda: {"camera": ("lots", 0)})
    assert limiter.limit_for("camera") == limiter.default


@pytest.mark.parametrize("notation", ["ten a second", "10/fortnight", "", "0/second", "1/s;2/m"])
def test_a_bad_notation_is_a_clear_error(notation: str) -> None:
    with pytest.raises(ValueError, match=r"is not a rate such as '10/second'"):
        RateLimiter(notation, 600)


@pytest.mark.parametrize("burst", [0, -1])
def test_a_burst_below_one_is_refused(burst: int) -> None:
    with pytest.raises(ValueError, match="burst"):
        RateLimiter("10/second", burst)


def test_notations_in_messages_a_second() -> None:
    assert per_second("10/second") == 10.0
    assert per_second("600/minute") == 10.0
    assert per_second("10 per 2 seconds") == 5.0


def test_buckets_are_forgotten_once_they_would_be_full() -> None:
    limiter = RateLimiter("10/second", 600)
    quiet, busy = uuid.uuid4(), uuid.uuid4()
    _passed(limiter, 100, now=0.0, device=quiet)
    _passed(limiter, 601, now=0.0, device=busy)
    assert limiter.tracked == 2
    # at the next sweep the quiet device's bucket is full again, the busy one's is not
    _passed(limiter, 600, now=SWEEP_SECONDS, device=busy)
    assert limiter.tracked == 1
    # forgetting a full bucket changes nothing: the quiet device has its whole burst
    assert _passed(limiter, 601, now=SWEEP_SECONDS, device=quiet) == 600


def test_a_refusal_is_reported_once_a_minute_per_device() -> None:
    limiter = RateLimiter("10/second", 600)
    other = uuid.uuid4()
    assert limiter.report_due(DEVICE, 0.0)
    assert not limiter.report_due(DEVICE, REPORT_SECONDS - 1)
    assert limiter.report_due(other, 1.0)
    assert limiter.report_due(DEVICE, REPORT_SECONDS)
