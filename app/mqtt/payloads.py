"""Device payloads: parse and validate before anything touches storage (SPEC section 5).

A message is accepted whole or rejected whole; a rejection carries a stable reason
label (counted in `telemetry_rejected_total{reason}`) and a detail naming the field.
"""

import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from app.core.models import DeviceStatus
from app.services.commands import Answer
from app.services.telemetry import Point
from app.services.validation import METRIC_NAME, METRIC_NAME_RULE

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_METRICS = 1000
MAX_UNIT_LENGTH = 50
MAX_FUTURE = timedelta(minutes=5)
DEFAULT_MAX_AGE = timedelta(days=90)  # IOTDECK_RETENTION_DAYS' default
_RESERVED_FLAT_KEYS = {"device_id", "timestamp", "ts"}
_MILLISECONDS_FROM = 10**11  # epoch numbers above this are milliseconds (year 5138 in seconds)


class Rejected(Exception):
    """A payload that is refused whole; `reason` is the metric label, `detail` names the field."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def device_id_from_topic(topic: str) -> uuid.UUID:
    """The device id of `devices/{id}/...`."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != "devices":
        raise Rejected("invalid_topic", f"topic '{topic}' is not devices/<id>/...")
    try:
        return uuid.UUID(parts[1])
    except ValueError:
        raise Rejected("invalid_device_id", f"'{parts[1]}' in the topic is not a UUID") from None


def _refuse_constant(token: str) -> float:
    raise Rejected("non_finite_value", f"{token} is not a finite number")


def _refuse_overflow(number: str) -> float:
    # float() of a numeral never raises: too large a one is infinite (and 10**400 is too)
    if not math.isfinite(float(number)):
        raise Rejected("non_finite_value", "a number overflows to infinity")
    return 0.0


def _load(payload: bytes) -> object:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected("oversized", f"payload is {len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # only failures pay for the slower parser, to tell NaN/Infinity/1e400 from broken JSON
        try:
            json.loads(
                payload,
                parse_constant=_refuse_constant,
                parse_float=_refuse_overflow,
                parse_int=_refuse_overflow,
            )
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than orjson's 1024
            pass
        # anything else orjson refuses (lone surrogates, a BOM, deep nesting) is malformed
        raise Rejected("malformed_json", str(exc)) from None


def _shown(value: object) -> str:
    # str() of a deeply nested list raises RecursionError: show only strings and scalars
    if isinstance(value, str):
        return value[:40]
    if value is None or isinstance(value, bool | int | float):
        return str(value)
    return f"<{type(value).__name__}>"


def _moment(value: object, field: str) -> datetime:
    if isinstance(value, bool):
        raise Rejected("invalid_timestamp", f"{field} must be an ISO 8601 time with a zone")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise Rejected("invalid_timestamp", f"{field} is not a finite number")
        seconds = value / 1000 if value > _MILLISECONDS_FROM else value
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise Rejected("invalid_timestamp", f"{field} {value} is out of range") from None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise Rejected("invalid_timestamp", f"{field} '{value[:40]}' is not ISO 8601") from None
        if moment.tzinfo is None:
            raise Rejected("invalid_timestamp", f"{field} '{value[:40]}' has no time zone")
    else:
        raise Rejected("invalid_timestamp", f"{field} must be an ISO 8601 time with a zone")
    return moment


def _time(value: object, field: str, arrival: datetime, max_age: timedelta) -> datetime:
    moment = _moment(value, field)
    try:
        # 0001-01-01T00:00:00+01:00 parses, but lies before the first UTC instant
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise Rejected("invalid_timestamp", f"{field} '{_shown(value)}' is out of range") from None
    if moment - arrival > MAX_FUTURE:
        raise Rejected("future_timestamp", f"{field} is more than 5 minutes in the future")
    if arrival - moment > max_age:
        raise Rejected(
            "invalid_timestamp", f"{field} is older than the {max_age.days}-day retention"
        )
    return moment


def _value(value: object, field: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float):
        raise Rejected("invalid_value", f"{field} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise Rejected("non_finite_value", f"{field} is not a finite number")
    return number


def _metric_name(name: object, field: str) -> str:
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
        shown = _shown(name)
        raise Rejected("invalid_metric_name", f"{field} '{shown}' must be {METRIC_NAME_RULE}")
    return name


def _seed_metrics(metrics: object, device_id: uuid.UUID, at: datetime) -> list[Point]:
    if not isinstance(metrics, list):
        raise Rejected("invalid_format", "metrics must be a list")
    if len(metrics) > MAX_METRICS:
        raise Rejected("too_many_metrics", f"{len(metrics)} metrics, at most {MAX_METRICS}")
    points = []
    for index, metric in enumerate(metrics):
        field = f"metrics[{index}]"
        if not isinstance(metric, dict):
            raise Rejected("invalid_format", f"{field} must be an object")
        name = _metric_name(metric.get("name"), f"{field}.name")
        if "value" not in metric:
            raise Rejected("invalid_value", f"{field}.value is missing")
        value = _value(metric["value"], f"{field}.value")
        unit = metric.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise Rejected("invalid_format", f"{field}.unit must be a string")
        if unit is not None and len(unit) > MAX_UNIT_LENGTH:
            raise Rejected("unit_too_long", f"{field}.unit is longer than {MAX_UNIT_LENGTH}")
        points.append(Point(device_id, name, at, value, unit or None))
    return points


def _flat_metrics(document: dict, device_id: uuid.UUID, at: datetime) -> list[Point]:
    names = [key for key in document if key not in _RESERVED_FLAT_KEYS]
    if len(names) > MAX_METRICS:
        raise Rejected("too_many_metrics", f"{len(names)} metrics, at most {MAX_METRICS}")
    return [
        Point(device_id, _metric_name(name, name), at, _value(document[name], name))
        for name in names
    ]


def parse_telemetry(
    topic_device: uuid.UUID,
    payload: bytes,
    arrival: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> list[Point]:
    """The points of one telemetry message, in the seed format or the flat form."""
    document = _load(payload)
    if not isinstance(document, dict):
        raise Rejected("invalid_format", "payload must be a JSON object")
    claimed = document.get("device_id")
    if claimed is not None and (
        not isinstance(claimed, str) or claimed.lower() != str(topic_device)
    ):
        raise Rejected("device_id_mismatch", f"device_id '{_shown(claimed)}' is not the topic's")
    if "timestamp" in document:
        at = _time(document["timestamp"], "timestamp", arrival, max_age)
    elif "ts" in document:
        at = _time(document["ts"], "ts", arrival, max_age)
    else:
        at = arrival
    if "metrics" in document:
        points = _seed_metrics(document["metrics"], topic_device, at)
    else:
        points = _flat_metrics(document, topic_device, at)
    if not points:
        raise Rejected("no_metrics", "the message carries no metric")
    return points


def parse_status(payload: bytes) -> DeviceStatus:
    """ONLINE or OFFLINE from `{"status": "online"}` or the bare word."""
    word: object = payload.decode(errors="replace").strip()
    if word.startswith("{"):
        document = _load(payload)
        word = document.get("status") if isinstance(document, dict) else None
    if isinstance(word, str) and word.strip('"').upper() in {"ONLINE", "OFFLINE"}:
        return DeviceStatus(word.strip('"').upper())
    raise Rejected("invalid_status", "status must be 'online' or 'offline'")


ANSWERS = ("acknowledged", "executed", "failed")
MAX_ANSWER_ERROR = 2000
MAX_ANSWER_RESULT_BYTES = 16 * 1024


def parse_answer(payload: bytes) -> Answer:
    """A device's answer to a command: `{"command_id", "status", "error"?, "result"?}`."""
    document = _load(payload)
    if not isinstance(document, dict):
        raise Rejected("invalid_ack", "the answer must be a JSON object")
    raw_id = document.get("command_id")
    try:
        command_id = uuid.UUID(raw_id if isinstance(raw_id, str) else "")
    except ValueError:
        raise Rejected("invalid_ack", "command_id must be the command's id (a UUID)") from None
    status = document.get("status")
    if not isinstance(status, str) or status.lower() not in ANSWERS:
        raise Rejected("invalid_ack", f"status must be one of {', '.join(ANSWERS)}")
    error = document.get("error")
    if error is not None and not isinstance(error, str):
        raise Rejected("invalid_ack", "error must be a string")
    result = document.get("result")
    try:
        size = 0 if result is None else len(orjson.dumps(result))
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255 levels)
        raise Rejected("invalid_ack", "result is nested too deeply") from None
    if size > MAX_ANSWER_RESULT_BYTES:
        raise Rejected("invalid_ack", f"result must be at most {MAX_ANSWER_RESULT_BYTES} bytes")
    shortened = None if error is None else error[:MAX_ANSWER_ERROR]
    return Answer(command_id, status.lower(), shortened, result)
