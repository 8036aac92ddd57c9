"""Checks of telemetry query arguments at the edge; each failure names the argument."""

import uuid
from datetime import UTC, datetime

from app.core.errors import ValidationError
from app.services import users, validation

MAX_POINTS = 10_000
# buckets count from the Unix epoch; the upper bound keeps an hour's arithmetic in range
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def device_id(value: str) -> uuid.UUID:
    """The `deviceId` argument as a UUID."""
    return validation.parse_id(value, "deviceId")


def metric_name(value: str) -> str:
    """The `metricName` argument: 1-100 characters of A-Z a-z 0-9 _ . -."""
    # the ingest's rule: a name outside it was never stored
    if not validation.METRIC_NAME.fullmatch(value):
        raise ValidationError("metricName", f"must be {validation.METRIC_NAME_RULE}")
    return value


def moment(value: str, field: str) -> datetime:
    """An ISO 8601 time argument as an aware UTC datetime; no zone means UTC."""
    shown = value[:40]
    try:
        parsed = datetime.fromisoformat(value.strip())
        # SPEC: times are UTC strings, so a time written without a zone is one too
        parsed = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
    except ValueError:
        reason = f"'{shown}' is not an ISO 8601 time such as 2026-11-29T00:00:00Z"
        raise ValidationError(field, reason) from None
    except OverflowError:  # a zone offset pushing year 1 or 9999 past the calendar
        raise ValidationError(field, f"'{shown}' is out of range") from None
    if not EARLIEST <= parsed <= LATEST:
        raise ValidationError(field, "must be between 1970-01-01 and 9999-01-01 (UTC)")
    return parsed


def page_limit(value: int | None, default: int, max_limit: int) -> int:
    """A list's `limit` argument: null means the default, which the contract fixes.

    The default must work on a server configured with smaller pages, and graphql-core
    cannot tell an explicit default from an omitted one, so both are capped; any other
    value is checked against the page size by the service.
    """
    wanted = default if value is None else value
    return min(wanted, max_limit) if wanted == default else wanted


def point_limit(value: int) -> int:
    """The `limit` argument of a series: 1 to MAX_POINTS."""
    return validation.page(value, 0, max_limit=MAX_POINTS)[0]


def page(limit: int | None, offset: int | None, *, default: int, max_limit: int) -> tuple[int, int]:
    """A list's `limit` (see `page_limit`) and `offset` (null means 0); the service checks both."""
    return page_limit(limit, default, max_limit), 0 if offset is None else offset


def credentials(email: str, password: str) -> tuple[str, str]:
    """`login`'s email (normalised) and password, unless no account could have them.

    Only their form is checked, the same for every account, so a refusal says nothing
    about any; and it comes before sign-in, which would count the attempt as a failure.
    """
    address = validation.email(email, "email")
    if not password or len(password.encode()) > users.MAX_PASSWORD_BYTES:
        raise ValidationError("password", f"must be 1 to {users.MAX_PASSWORD_BYTES} bytes")
    return address, password
