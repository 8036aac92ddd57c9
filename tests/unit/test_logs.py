"""The log formatter and the correlation ids it writes (app/core/logs.py, SPEC 11)."""

import asyncio
import io
import json
import logging

import pytest

from app.core import logs
from app.core.config import Settings
from app.web.request_ids import request_id

Captured = tuple[logging.Logger, io.StringIO]


def _logger(log_format: str) -> Captured:
    """A private logger writing through the formatter of `log_format` into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(log_format))
    logger = logging.getLogger(f"iotdeck.test.{log_format}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


@pytest.fixture
def json_log() -> Captured:
    """A logger writing JSON lines into a buffer."""
    return _logger("json")


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_the_fixed_fields_and_the_bound_ones(json_log: Captured) -> None:
    logger, stream = json_log
    with logs.bind(correlation_id="batch-1", device_id="d-7"):
        logger.warning("rejected %s", "x", extra={"command_id": "c-3"})
    [line] = _lines(stream)
    assert list(line) == [
        "timestamp",
        "level",
        "logger",
        "event",
        "correlation_id",
        "device_id",
        "command_id",
    ]
    assert (line["level"], line["logger"], line["event"]) == (
        "WARNING",
        "iotdeck.test.json",
        "rejected x",
    )
    assert (line["correlation_id"], line["device_id"], line["command_id"]) == (
        "batch-1",
        "d-7",
        "c-3",
    )
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]


def test_fields_that_do_not_apply_are_absent(json_log: Captured) -> None:
    logger, stream = json_log
    logger.info("nothing bound", extra={"device_id": None, "color_message": "uvicorn's"})
    [line] = _lines(stream)
    assert set(line) == {"timestamp", "level", "logger", "event"}


def test_a_message_with_line_breaks_and_its_traceback_stay_one_line(json_log: Captured) -> None:
    logger, stream = json_log
    try:
        raise ValueError("the cause")
    except ValueError:
        logger.exception("two\nlines and 85°C")
    assert stream.getvalue().count("\n") == 1  # one object, one line
    [line] = _lines(stream)
    assert line["event"] == "two\nlines and 85°C"
    assert "°C" in stream.getvalue()  # UTF-8 as it is, so a grep finds it
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: the cause" in line["exception"]


def test_an_extra_field_wins_over_the_bound_one(json_log: Captured) -> None:
    logger, stream = json_log
    with logs.bind(correlation_id="request", device_id="bound"):
        logger.info("publish", extra={"correlation_id": "the command's", "device_id": None})
    [line] = _lines(stream)
    assert (line["correlation_id"], line["device_id"]) == ("the command's", "bound")


def test_bind_nests_skips_none_and_is_undone_after() -> None:
    assert logs.correlation_id() is None
    with logs.bind(correlation_id="outer", request_id="r"):
        with logs.bind(correlation_id=None, alert_id="a"):
            assert logs.bound() == {"correlation_id": "outer", "request_id": "r", "alert_id": "a"}
        with logs.bind(correlation_id="inner"):
            assert logs.correlation_id() == "inner"
        assert logs.correlation_id() == "outer"
    assert logs.bound() == {}


async def test_a_task_created_in_a_context_keeps_its_ids() -> None:
    async def seen() -> str | None:
        await asyncio.sleep(0)
        return logs.correlation_id()

    with logs.bind(correlation_id="mine"):
        task = asyncio.create_task(seen(), context=logs.context(correlation_id="the alert's"))
        assert logs.correlation_id() == "mine"
    assert await task == "the alert's"
    assert logs.correlation_id() is None


async def test_bind_for_task_stays_in_its_task() -> None:
    async def operation() -> str | None:
        logs.bind_for_task(correlation_id="subscription")
        await asyncio.sleep(0)
        return logs.correlation_id()

    assert await asyncio.create_task(operation()) == "subscription"
    assert logs.correlation_id() is None


def test_text_lines_read_as_text_with_their_fields_and_traceback() -> None:
    logger, stream = _logger("text")
    with logs.bind(correlation_id="batch-1"):
        try:
            raise KeyError("gone")
        except KeyError:
            logger.error("alert %s failed", "a-1", extra={"alert_id": "a-1"})
            logger.exception("with the cause")
    first, second, *trace = stream.getvalue().splitlines()
    assert "ERROR" in first and "alert a-1 failed" in first
    assert "iotdeck.test.text" in first
    assert "correlation_id=batch-1" in first and "alert_id=a-1" in first
    assert not first.lstrip().startswith("{")
    assert "with the cause" in second
    assert trace[0] == "Traceback (most recent call last):"
    assert trace[-1] == "KeyError: 'gone'"


def test_configure_replaces_the_root_handler_and_libraries_propagate_to_it() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        settings = Settings(log_level="warning", log_format="JSON")
        logs.configure(settings)
        logs.configure(settings)  # again: still one handler
        [handler] = root.handlers
        assert root.level == logging.WARNING
        formatter = handler.formatter
        assert isinstance(formatter, logging.Formatter)
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "up", (), None)
        assert json.loads(formatter.format(record))["logger"] == "uvicorn.error"
        for library in ("uvicorn.error", "nicegui", "alembic", "paho.mqtt.client"):
            assert logging.getLogger(library).propagate
        assert logging.getLogger("paho").level == logging.WARNING
        logs.configure(settings, level="ERROR")
        assert root.level == logging.ERROR
    finally:
        root.handlers, root.level = saved
        logging.captureWarnings(False)


def test_the_format_defaults_to_text_in_demo_mode_and_json_otherwise() -> None:
    assert Settings(demo=True).resolved_log_format == "text"
    assert Settings(demo=False).resolved_log_format == "json"
    assert Settings(demo=True, log_format="json").resolved_log_format == "json"
    assert Settings(log_format="").log_format is None
    with pytest.raises(ValueError, match="log_level"):
        Settings(log_level="verbose")


def test_uvicorn_logs_through_the_pipeline_with_access_lines_at_debug_only() -> None:
    quiet = logs.uvicorn_options(Settings(log_level="INFO"))
    assert quiet == {"log_config": None, "uvicorn_logging_level": "warning", "access_log": False}
    assert logs.uvicorn_options(Settings(log_level="DEBUG"))["access_log"] is True


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc", True),
        ("req-1.2_3", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("two words", False),
        ("line\nbreak", False),
        ('{"json": 1}', False),
        ("", False),
    ],
)
def test_a_request_id_is_kept_only_when_it_is_a_sane_token(given: str, kept: bool) -> None:
    scope = {"type": "http", "headers": [(b"x-request-id", given.encode())]}
    found = request_id(scope)
    assert (found == given) is kept
    if not kept:
        assert len(found) == 32 and int(found, 16) >= 0  # a fresh id
