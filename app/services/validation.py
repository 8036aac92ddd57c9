"""Field checks shared by the services; each failure names the field."""

import json
import re
import uuid
from typing import Any

from app.core.errors import ValidationError

MAX_METADATA_BYTES = 16 * 1024
# metric names as devices may send them (SPEC section 5) and queries may ask for them
METRIC_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
METRIC_NAME_RULE = "1 to 100 characters of A-Z a-z 0-9 _ . -"
DEVICE_TYPE = re.compile(r"[a-z0-9_-]{1,100}")
DEVICE_TYPE_RULE = "1 to 100 characters of a-z, 0-9, '_' and '-'"
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# C0 controls but tab, newline and return, and DEL: no one means them in text, and
# PostgreSQL cannot store NUL at all (its refusal would be an internal error, not an answer)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# NUL as serialised JSON writes it (after an even number of backslashes): jsonb refuses it
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def parse_id(value: object, field: str = "id") -> uuid.UUID:
    """A UUID from a string (or UUID); ValidationError naming `field` otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(field, f"'{value}' is not a valid id (UUID)") from None


def plain(value: str, field: str) -> str:
    """`value` unless it holds a control character (tab, newline and return are text)."""
    if _CONTROL.search(value):
        raise ValidationError(field, "must not contain control characters such as NUL")
    return value


def text(value: object, field: str, *, max_length: int, min_length: int = 1) -> str:
    """A stripped string of `min_length`..`max_length` characters, no control characters."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    stripped = plain(value, field).strip()
    if not min_length <= len(stripped) <= max_length:
        raise ValidationError(field, f"must be {min_length} to {max_length} characters")
    return stripped


def json_object(value: object, field: str, *, max_bytes: int = MAX_METADATA_BYTES) -> dict:
    """A JSON object (dict) whose serialised form fits in `max_bytes`."""
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a JSON object")
    try:
        serialised = json.dumps(value, allow_nan=False, separators=(",", ":"))
        size = len(serialised.encode())
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"is not valid JSON: {exc}") from None
    if size > max_bytes:
        raise ValidationError(field, f"is {size} bytes; at most {max_bytes} allowed")
    if _JSON_NUL.search(serialised):
        raise ValidationError(field, "must not contain NUL characters")
    return value


def device_type(value: object, field: str = "type") -> str:
    """A device type as devices are registered with: a-z, 0-9, '_' and '-'."""
    if not isinstance(value, str) or not DEVICE_TYPE.fullmatch(value):
        raise ValidationError(field, f"must be {DEVICE_TYPE_RULE}")
    return value


def email(value: object, field: str = "email") -> str:
    """An email address, lower-cased, of at most 255 characters."""
    address = text(value, field, max_length=255).lower()
    if not EMAIL.fullmatch(address):
        raise ValidationError(field, f"'{address[:100]}' is not an email address")
    return address


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
