"""What the rule language reports: errors that stop a rule, warnings that do not."""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Diagnostic:
    """One finding, placed in the text (1-based line and column)."""

    line: int
    column: int
    message: str  # says what is wrong, what was expected, and a hint when one helps
    severity: Literal["ERROR", "WARNING"] = "ERROR"
    excerpt: str = ""  # the offending line with a caret under the column

    def __str__(self) -> str:
        text = f"line {self.line}, column {self.column}: {self.message}"
        return f"{text}\n{self.excerpt}" if self.excerpt else text


class RuleSyntaxError(Exception):
    """The text is not a valid rule; carries every error found (at least one)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics


def excerpt(text: str, line: int, column: int) -> str:
    """The line at `line` of `text` with a caret under `column`."""
    lines = text.splitlines() or [""]
    source = lines[min(max(line, 1), len(lines)) - 1]
    return f"{source}\n{' ' * (max(column, 1) - 1)}^"
