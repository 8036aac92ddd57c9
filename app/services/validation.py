"""Field checks shared by the services; each failure names the field."""

import json
import re
import uuid
from typing import Any

from app.errors import ValidationError

MAX_METADATA_BYTES = 16 * 1024
# metric names as devices may send them (SPEC section 5) and queries may ask for them
METRIC_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
METRIC_NAME_RULE = "1 to 100 characters of A-Z a-z 0-9 _ . -"


def parse_id(value: object, field: str = "id") -> uuid.UUID:
    """A UUID from a string (or UUID); ValidationError naming `field` otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(field, f"'{value}' is not a valid id (UUID)") from None


def text(value: object, field: str, *, max_length: int, min_length: int = 1) -> str:
    """A stripped string of `min_length`..`max_length` characters."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    stripped = value.strip()
    if not min_length <= len(stripped) <= max_length:
        raise ValidationError(field, f"must be {min_length} to {max_length} characters")
    return stripped


def json_object(value: object, field: str, *, max_bytes: int = MAX_METADATA_BYTES) -> dict:
    """A JSON object (dict) whose serialised form fits in `max_bytes`."""
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a JSON object")
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"is not valid JSON: {exc}") from None
    if size > max_bytes:
        raise ValidationError(field, f"is {size} bytes; at most {max_bytes} allowed")
    return value


def page(limit: int, offset: int, *, max_limit: int) -> tuple[int, int]:
    """Checked paging arguments: 1 <= limit <= max_limit, offset >= 0."""
    if not 1 <= limit <= max_limit:
        raise ValidationError("limit", f"must be between 1 and {max_limit}")
    if offset < 0:
        raise ValidationError("offset", "must be 0 or more")
    return limit, offset


def any_of(value: Any, field: str, allowed: type) -> Any:
    """`value` converted to the enum `allowed`, naming the accepted values on failure."""
    try:
        return allowed(value)
    except ValueError:
        names = ", ".join(member.value for member in allowed)
        raise ValidationError(field, f"'{value}' is not one of {names}") from None
