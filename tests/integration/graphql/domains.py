"""What each mutation argument legitimately accepts (issue 12's bad-input corpus).

`DOMAINS` is the table, keyed `mutation.argument[.field]`; an argument missing from it is
held to what its GraphQL type implies (a new String argument must at least refuse the
wrong types, NUL and a mebibyte). Every value of `corpus.hostile_values` that a domain does
not accept must be refused with BAD_USER_INPUT naming the argument; the others are data.
"""

import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLEnumType, GraphQLInputObjectType, get_named_type

from tests.integration.graphql.corpus import MISSING, Argument, Values, hostile_values

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, newline, return are text
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DEVICE_TYPE = re.compile(r"[a-z0-9_-]{1,100}")
_ACTION = re.compile(r"[a-z0-9_.-]{1,100}")
_METRIC = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


PATH_INSIDE = "<a JSON path inside the value>"


@dataclass(frozen=True)
class Domain:
    """What an argument legitimately accepts, in words and as a test of one value."""

    says: str
    test: Callable[[Any], bool]
    null: bool = False  # whether null is a meaningful value (not given, cleared, default)
    # null meaning "not given" can leave a companion on its own: the refusal names that one
    null_names: str | None = None
    # a JSON document checked inside (a dashboard spec): an object's refusal names the path
    # in it where the first problem is (`widgets[0].x`), anything else the argument
    names_paths_inside: bool = False

    def accepts(self, value: Any) -> bool:
        """True when `value` is valid data for the argument (MISSING: left out)."""
        if value is None or value is MISSING:
            return self.null
        return self.test(value)

    def refusal_names(self, argument: "Argument", value: Any) -> str:
        """The field a refusal of `value` for `argument` must name."""
        if (value is None or value is MISSING) and self.null_names:
            return self.null_names
        if self.names_paths_inside and isinstance(value, dict):
            return PATH_INSIDE
        return argument.name


def _clean(value: Any) -> bool:
    return isinstance(value, str) and not _CONTROL.search(value)


def text(max_length: int, *, blank: bool = False, null: bool = False) -> Domain:
    """Text of at most `max_length` characters (stripped), no control characters."""
    least = 0 if blank else 1
    return Domain(
        f"text, {least} to {max_length} characters once stripped, no control characters",
        lambda value: _clean(value) and least <= len(value.strip()) <= max_length,
        null,
    )


def pattern(
    regex: re.Pattern[str], says: str, *, null: bool = False, null_names: str | None = None
) -> Domain:
    """A string matching `regex` whole."""
    return Domain(
        says,
        lambda value: isinstance(value, str) and bool(regex.fullmatch(value)),
        null,
        null_names,
    )


def ident(*, null: bool = False) -> Domain:
    """A UUID (the hostile corpus holds none, so every value of it is refused)."""

    def test(value: Any) -> bool:
        try:
            uuid.UUID(value)
        except (TypeError, ValueError, AttributeError):
            return False
        return True

    return Domain("a UUID", test, null)


def whole(least: int, most: int, *, null: bool = False) -> Domain:
    """A whole number from `least` to `most`."""
    return Domain(
        f"a whole number from {least} to {most}",
        lambda value: type(value) is int and least <= value <= most,
        null,
    )


def real(*, null: bool = False) -> Domain:
    """Any finite number."""
    return Domain(
        "any finite number",
        lambda value: (
            type(value) in (int, float) and abs(value) <= 1.7e308 and math.isfinite(value)
        ),
        null,
    )


def flag(*, null: bool = False) -> Domain:
    """true or false."""
    return Domain("true or false", lambda value: type(value) is bool, null)


def choice(*allowed: str, null: bool = False) -> Domain:
    """One of `allowed`, exactly."""
    return Domain(f"one of {', '.join(allowed)}", lambda value: value in allowed, null)


def json_object(max_bytes: int, *, null: bool = False) -> Domain:
    """A JSON object of at most `max_bytes`, without NaN or NUL anywhere in it."""

    def test(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        try:
            written = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except ValueError:
            return False
        return len(written.encode()) <= max_bytes and not _NUL_ESCAPE.search(written)

    return Domain(f"a JSON object of at most {max_bytes} bytes, no NaN, no NUL", test, null)


def email() -> Domain:
    """An email address (1 to 255 characters)."""
    return Domain(
        "an email address, at most 255 characters",
        lambda value: text(255).test(value) and bool(_EMAIL.match(value.strip())),
    )


def password(least: int) -> Domain:
    """A password of `least` characters to 72 bytes (bcrypt's limit); any characters."""
    return Domain(
        f"at least {least} characters, at most 72 bytes, any characters",
        lambda value: isinstance(value, str) and least <= len(value) and len(value.encode()) <= 72,
    )


def dashboard_spec(*, null: bool = False) -> Domain:
    """A whole dashboard spec (docs/dashboards.md): no hostile value is one."""
    return Domain("a dashboard spec (docs/dashboards.md)", lambda _value: False, null, None, True)


def nothing(says: str, *, null: bool = False) -> Domain:
    """No value of the corpus is valid (valid values exist, they are just not hostile)."""
    return Domain(says, lambda _value: False, null)


_TYPE_RULE = "a device type: 1 to 100 characters of a-z, 0-9, _ and -"
_OPTIONAL_DEVICE_ID = ident(null=True)
DOMAINS: dict[str, Domain] = {
    # well-formed but wrong credentials are UNAUTHENTICATED, not bad input
    "login.email": email(),
    "login.password": password(1),
    "createUser.email": email(),
    "createUser.password": password(8),
    "createUser.name": text(255, blank=True, null=True),  # blank or null: no name
    "updateUser.input.name": text(255, blank=True, null=True),  # blank or null: cleared
    "updateUser.input.role": choice("ADMIN", "OPERATOR", "VIEWER"),
    "updateUser.input.isActive": flag(),
    "updateUser.input.password": password(8),
    "createDevice.input.name": text(255),
    "createDevice.input.type": pattern(_DEVICE_TYPE, _TYPE_RULE),
    "createDevice.input.metadata": json_object(16 * 1024, null=True),
    "updateDevice.input.name": text(255),
    "updateDevice.input.type": pattern(_DEVICE_TYPE, _TYPE_RULE),
    "updateDevice.input.metadata": json_object(16 * 1024, null=True),  # null: cleared to {}
    # the baseline rules are structured (metricName, condition, threshold): a blank
    # expression is "not given" there, anything else must parse as a condition
    "createAlertRule.input.expression": Domain(
        "rule text or a condition; blank: not given",
        lambda value: isinstance(value, str) and not value.strip(),
        null=True,
    ),
    "updateAlertRule.input.expression": Domain(
        "rule text or a condition; empty: not given",
        lambda value: value == "",
        null=True,
    ),
    "createAlertRule.input.name": text(255),
    "updateAlertRule.input.name": text(255, null=True),
    "createAlertRule.input.description": text(2000, blank=True, null=True),
    "updateAlertRule.input.description": text(2000, blank=True, null=True),
    "createAlertRule.input.deviceId": _OPTIONAL_DEVICE_ID,
    "updateAlertRule.input.deviceId": _OPTIONAL_DEVICE_ID,
    "createAlertRule.input.deviceType": pattern(_DEVICE_TYPE, _TYPE_RULE, null=True),
    "updateAlertRule.input.deviceType": pattern(_DEVICE_TYPE, _TYPE_RULE, null=True),
    # the structured trio goes together: null is "not given", and the baselines give all three
    "createAlertRule.input.metricName": pattern(
        _METRIC, "a metric name; null: `expression` is asked for", null_names="expression"
    ),
    "updateAlertRule.input.metricName": pattern(
        _METRIC, "a metric name; null: `condition` is refused alone", null_names="condition"
    ),
    "createAlertRule.input.condition": choice("gt", "gte", "lt", "lte", "eq"),
    "updateAlertRule.input.condition": choice("gt", "gte", "lt", "lte", "eq"),
    "createAlertRule.input.threshold": real(),
    "updateAlertRule.input.threshold": real(),
    "createAlertRule.input.cooldownMinutes": whole(1, 2**31 - 1, null=True),
    "updateAlertRule.input.cooldownMinutes": whole(1, 2**31 - 1, null=True),
    "resolveAlert.message": text(2000, blank=True, null=True),
    "sendCommand.input.action": pattern(_ACTION, "1 to 100 characters of a-z, 0-9, _ . -"),
    "sendCommand.input.params": json_object(16 * 1024, null=True),  # null: {}
    "sendCommand.input.timeoutSeconds": whole(1, 24 * 3600, null=True),  # null: the default
    "sendCommand.input.idempotencyKey": text(255, null=True),
    "updateDeviceConfig.config": json_object(64 * 1024),
    "updateDeviceTypeSettings.type": pattern(_DEVICE_TYPE, _TYPE_RULE),
    "updateDeviceTypeSettings.rateLimit": nothing("a rate such as 10/second", null=True),
    "updateDeviceTypeSettings.rateBurst": whole(1, 2**31 - 1, null=True),  # null: the default
    "createDashboard.input.name": text(200),
    "createDashboard.input.description": text(2000, blank=True, null=True),
    "createDashboard.input.spec": dashboard_spec(null=True),  # null: empty
    "updateDashboard.input.name": text(200, null=True),  # null: unchanged
    "updateDashboard.input.description": text(2000, blank=True, null=True),  # cleared
    "updateDashboard.input.spec": dashboard_spec(null=True),  # null: unchanged
    "importDashboard.spec": dashboard_spec(),
}


def domain(argument: Argument) -> Domain:
    """What `argument` accepts: from `DOMAINS`, else what its GraphQL type implies."""
    if argument.key in DOMAINS:
        return DOMAINS[argument.key]
    named = get_named_type(argument.type)
    null = not argument.required
    if isinstance(named, GraphQLEnumType):
        return choice(*named.values, null=null)
    if isinstance(named, GraphQLInputObjectType):
        return Domain(f"a {named.name}", lambda value: isinstance(value, dict), null)
    # a new argument must at least refuse the wrong types, NUL and a mebibyte
    defaults = {
        "ID": ident(null=null),
        "String": text(64 * 1024, blank=True, null=null),
        "Int": whole(-(2**31), 2**31 - 1, null=null),
        "Float": real(null=null),
        "Boolean": flag(null=null),
        "JSON": json_object(64 * 1024, null=null),
    }
    return defaults[named.name]


def refused_values(argument: Argument) -> Values:
    """The hostile values `argument` must refuse."""
    accepts = domain(argument).accepts
    return [(label, value) for label, value in hostile_values(argument) if not accepts(value)]


def accepted_values(argument: Argument) -> Values:
    """The hostile-looking values that are valid data for `argument`."""
    accepts = domain(argument).accepts
    return [
        (label, value)
        for label, value in hostile_values(argument)
        if accepts(value) and value is not MISSING
    ]
