"""The rule language's syntax tree: frozen dataclasses, built by the parser, read by the
compiler and by `format` (SPEC section 7). No behaviour lives here."""

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]
WINDOW_FUNCTIONS = ("avg", "min", "max", "sum", "count", "last", "delta", "rate", "stddev")
# a command's action, everywhere commands are sent (a rule's `command`, GraphQL, the pages)
COMMAND_ACTION = re.compile(r"[a-z0-9_.-]{1,100}")
COMMAND_ACTION_RULE = "1 to 100 characters of a-z, 0-9, '_', '.', '-'"
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
DEFAULT_SEVERITY: Severity = "warning"
DEFAULT_COOLDOWN_SECONDS = 300.0


@dataclass(frozen=True)
class Position:
    """Where a node starts in the rule text (1-based)."""

    line: int
    column: int


@dataclass(frozen=True)
class Duration:
    """A span of time as written (`5m`) and in seconds."""

    seconds: float
    text: str


# -- values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A numeric literal."""

    value: float


@dataclass(frozen=True)
class Metric:
    """A bare metric name: the device's latest value of it."""

    name: str
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Window:
    """`function(metric, duration)` over the device's recent points, e.g. `avg(t, 5m)`."""

    function: str  # one of WINDOW_FUNCTIONS
    metric: str
    duration: Duration
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Arithmetic:
    """`left op right` with op one of + - * /."""

    op: Literal["+", "-", "*", "/"]
    left: "Value"
    right: "Value"


@dataclass(frozen=True)
class Negative:
    """Unary minus."""

    operand: "Value"


Value = Number | Metric | Window | Arithmetic | Negative

# -- conditions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """`left op right` with op one of > >= < <= == !=."""

    op: Literal[">", ">=", "<", "<=", "==", "!="]
    left: Value
    right: Value


@dataclass(frozen=True)
class Between:
    """`value between low and high` (inclusive)."""

    value: Value
    low: Value
    high: Value


@dataclass(frozen=True)
class NoData:
    """`nodata(metric, duration)`: true when no point of `metric` came for `duration`."""

    metric: str
    duration: Duration
    position: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class And:
    """Both conditions."""

    left: "Condition"
    right: "Condition"


@dataclass(frozen=True)
class Or:
    """Either condition."""

    left: "Condition"
    right: "Condition"


@dataclass(frozen=True)
class Not:
    """The opposite condition."""

    operand: "Condition"


Condition = Comparison | Between | NoData | And | Or | Not

# -- rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Which devices a rule watches: all, one type, or one device (by id)."""

    kind: Literal["all", "type", "device"] = "all"
    value: str | None = None


@dataclass(frozen=True)
class Notify:
    """Where to send the alert: `email "a@b"` or `webhook "https://..."`."""

    channel: Literal["email", "webhook"]
    target: str


@dataclass(frozen=True)
class CommandAction:
    """`command action {params}`: a command sent to the device when the rule fires."""

    action: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Rule:
    """One whole rule; clause defaults are the language's (SPEC section 7)."""

    name: str
    when: Condition
    scope: Scope = Scope()
    hold: Duration | None = None  # `for D`: the condition must hold this long first
    severity: Severity = DEFAULT_SEVERITY
    cooldown: Duration = Duration(DEFAULT_COOLDOWN_SECONDS, "5m")
    message: str | None = None
    notify: tuple[Notify, ...] = ()
    command: CommandAction | None = None
    clear: Condition | None = None  # `clear when C`: resolves the alert automatically
    position: Position | None = field(default=None, compare=False)
