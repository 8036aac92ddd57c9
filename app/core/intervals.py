"""Intervals as operators type them: "15 minutes", "1 hour", "30s", "5m", "7 days"."""

import re

from app.core.errors import ValidationError

HOUR = 3600
DAY = 24 * HOUR
MAX_INTERVAL = 366 * DAY

# a whole number, then a unit, long or short
_INTERVAL = re.compile(r"([0-9]{1,9})\s*([a-z]+)", re.ASCII)
_UNITS = {
    **dict.fromkeys(("s", "second", "seconds"), 1),
    **dict.fromkeys(("m", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hour", "hours"), HOUR),
    **dict.fromkeys(("d", "day", "days"), DAY),
}
_FORMS = "'30 seconds', '1 minute', '15 minutes', '1 hour', '1 day' or '30s', '5m', '1h', '1d'"


def parse_interval(text: str, field: str = "interval") -> int:
    """Seconds in an interval such as "15 minutes" or "1h"; ValidationError(field) else."""
    match = _INTERVAL.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None or match.group(2) not in _UNITS:
        shown = str(text)[:40]
        raise ValidationError(field, f"'{shown}' is not an interval; use {_FORMS}")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= MAX_INTERVAL:
        raise ValidationError(field, "must be more than 0 and at most 366 days")
    return seconds
