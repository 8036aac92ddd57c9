"""One logging pipeline for every process, and the correlation ids its lines carry (SPEC 11).

Every logger, ours and the libraries' (uvicorn, NiceGUI, alembic, paho, amqtt), propagates
to ONE handler on the root logger whose formatter (structlog's `ProcessorFormatter`) writes
each record as one JSON object a line (`IOTDECK_LOG_FORMAT=json`, the default outside demo
mode) or as a readable text line (`text`, the demo's default).

Correlation lives in a context variable, so it follows the work through `await`, tasks and
`asyncio.to_thread` without being passed around: `bind(correlation_id=..., device_id=...)`
around a piece of work puts those fields on every line logged inside it, and the services
store `correlation_id()` on the alerts and commands they create. Who binds what:
- an HTTP request or WebSocket: `app.web.request_ids` (request_id, and a correlation_id equal
  to it);
- a GraphQL subscription: `app.graphql.correlation` (a correlation_id of its own);
- an MQTT batch in ingest: a new correlation_id, carried by its bus telemetry messages into
  the evaluator, which binds it while it opens alerts and sends their commands; the
  notification and command dispatchers log each send with the id stored on the row.
"""

import contextlib
import contextvars
import logging
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from app.core.config import Settings

# the fields a line carries where they apply, in this order after the four fixed ones
FIELDS = ("correlation_id", "request_id", "device_id", "alert_id", "command_id", "operation")
# libraries whose per-step chatter is noise at INFO (paho would log every packet at DEBUG)
CHATTY = ("alembic", "amqtt", "transitions", "apscheduler", "paho")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_bound: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "iotdeck_log_fields", default=_EMPTY
)


def new_id() -> str:
    """A fresh correlation or request id (32 hex digits), random in every digit.

    It is also the trace id of the work's spans (app/core/tracing.py). Not a uuid4: its fixed
    version and variant digits sit where OpenTelemetry's ratio sampler reads, which would
    then keep every trace or none.
    """
    return secrets.token_hex(16)


def correlation_id() -> str | None:
    """The correlation id bound here, if any: what a new alert or command stores."""
    return _bound.get().get("correlation_id")


def _merged(fields: Mapping[str, object]) -> Mapping[str, str]:
    """The bound fields with `fields` on top (None values leave a field as it was)."""
    added = {name: str(value) for name, value in fields.items() if value is not None}
    return MappingProxyType({**_bound.get(), **added}) if added else _bound.get()


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Put `fields` (FIELDS names; None ones skipped) on every line logged in this block."""
    token = _bound.set(_merged(fields))
    try:
        yield
    finally:
        _bound.reset(token)


def bind_for_task(**fields: object) -> None:
    """Bind `fields` until the current task ends; only in a task that is one piece of work.

    For work whose beginning and end are not in one block of ours (a GraphQL WebSocket
    operation runs in a task strawberry creates for it): the task's context goes with it.
    """
    _bound.set(_merged(fields))


def context(**fields: object) -> contextvars.Context:
    """A copy of the current context with `fields` bound, for a task created to run in it."""
    copied = contextvars.copy_context()
    copied.run(bind_for_task, **fields)
    return copied


def bound() -> Mapping[str, str]:
    """The fields bound here, for `bind(**bound())` in a thread that does not inherit them.

    `asyncio.to_thread` and anyio carry the context into their worker threads; NiceGUI's
    `run.io_bound` (an executor) does not.
    """
    return _bound.get()


# --- the formatter ------------------------------------------------------------------------


def _fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The line's fields in a fixed order: the record's, then the bound and `extra=` ones.

    Runs in the thread that logs (handlers format synchronously), so the bound fields are
    those of the work being logged. A field passed in `extra=` wins over a bound one.
    """
    record: logging.LogRecord = event["_record"]
    moment = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    line: EventDict = {
        "timestamp": moment.replace("+00:00", "Z"),
        "level": record.levelname,
        "logger": record.name,
        "event": event["event"].rstrip(),  # a warning's text ends in a line break
    }
    bound = _bound.get()
    for name in FIELDS:
        value = record.__dict__.get(name)
        if value is None:
            value = bound.get(name)
        if value is not None:
            line[name] = str(value)
    if "exc_info" in event:
        line["exc_info"] = event["exc_info"]  # rendered as `exception` next
    if "stack_info" in event:
        line["stack"] = event["stack_info"]
    return line


def _json(document: EventDict, **options: Any) -> str:
    # orjson: UTF-8 as it is ("85°C" stays greppable), and several times the stdlib's speed
    return orjson.dumps(document, **options).decode()


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` ("json" or "text") for a handler of the root logger."""
    if log_format == "json":
        renderer: structlog.typing.Processor = structlog.processors.JSONRenderer(_json)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False,
            pad_event_to=0,
            sort_keys=False,
            # structlog's default (rich) prints local variables: secrets among them
            exception_formatter=structlog.dev.plain_traceback,
        )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_fields],
        processors=[structlog.processors.format_exc_info, renderer],
    )


def configure(settings: Settings, *, level: str | None = None) -> None:
    """Send every logger of this process through one stderr handler in the chosen format.

    `level` overrides IOTDECK_LOG_LEVEL (the benchmarks want warnings only). Safe to call
    again: the root's handlers are replaced, not added to.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(settings.resolved_log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or settings.log_level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a library's warning is a line like any other


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """`ui.run` arguments that leave uvicorn's logging to `configure`.

    No `log_config`: uvicorn installs no handler or format of its own and its loggers
    propagate to ours. Its start-up lines and one line per request (access log) only at
    DEBUG: at INFO they would drown the lines about devices, alerts and commands.
    """
    debug = settings.log_level == "DEBUG"
    return {
        "log_config": None,
        "uvicorn_logging_level": "debug" if debug else "warning",
        "access_log": debug,
    }
