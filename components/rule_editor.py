"""The rule editor: CodeMirror with the rule language's colours and inline diagnostics.

NiceGUI's CodeMirror knows no language close to ours, so the page teaches it one: a small
CodeMirror `StreamLanguage` (keywords, strings, durations, numbers, functions, comments),
installed in the browser once the editor exists. Diagnostics come from `rules.checks` as
the text changes (after a pause in typing) and are drawn three ways: a wavy underline at
the exact spot, a tinted line with the message as its hover tooltip, and a list under the
editor whose entries scroll the editor to their line.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from nicegui import ui

from app.services.rules import MAX_EXPRESSION_LENGTH
from rules.checks import validate
from rules.errors import Diagnostic, RuleSyntaxError
from rules.parser import parse_rule

CHECK_DELAY = 0.35  # seconds of quiet typing before the text is checked
_WORD = re.compile(r"[A-Za-z0-9_.\-]+")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"?')

_CSS = """
.rule-code { border: 1px solid #cbd5e1; border-radius: 0.375rem; overflow: hidden;
  font-size: 13px; }
.rule-code:focus-within { border-color: #1d4ed8; box-shadow: 0 0 0 1px #1d4ed8; }
.rule-code .cm-editor { min-height: 12rem; max-height: 32rem; }
.rule-code .cm-scroller { font-family: ui-monospace, "SF Mono", Menlo, Consolas,
  "DejaVu Sans Mono", "Liberation Mono", monospace; line-height: 1.6; }
.rule-code .cm-gutters { background: #f8fafc; border-right: 1px solid #e2e8f0; color: #94a3b8; }
.rule-code .cm-rule-error { text-decoration: underline wavy #dc2626;
  text-decoration-skip-ink: none; text-underline-offset: 3px;
  background: rgba(254, 202, 202, 0.55); border-radius: 2px; }
.rule-code .cm-rule-warning { text-decoration: underline wavy #d97706;
  text-decoration-skip-ink: none; text-underline-offset: 3px;
  background: rgba(253, 230, 138, 0.5); border-radius: 2px; }
.rule-code .cm-line.cm-rule-error-line { background: #fef2f2; box-shadow: inset 3px 0 0 #dc2626; }
.rule-code .cm-line.cm-rule-warning-line { background: #fffbeb;
  box-shadow: inset 3px 0 0 #d97706; }
.rule-code .cm-tooltip { font-size: 12px; padding: 4px 8px; max-width: 36rem;
  border-radius: 4px; border-color: #e2e8f0; background: #0f172a; color: #f8fafc; }
"""

# the rule language for CodeMirror: token names are Lezer highlight tags
_LANGUAGE_JS = """
(async () => {
  const CM = await import("nicegui-codemirror");
  if (!window.iotdeckRuleLanguage) {
    const words = (text) => new Set(text.split(" "));
    const KEYWORDS = words("rule on type device when for severity cooldown message notify " +
                           "email webhook command clear");
    const LOGIC = words("and or not between");
    const FUNCTIONS = words("avg min max sum count last delta rate stddev nodata");
    const LEVELS = words("info warning critical");
    window.iotdeckRuleLanguage = CM.StreamLanguage.define({
      name: "iotdeck-rule",
      token(stream) {
        if (stream.eatSpace()) return null;
        if (stream.match(/^#.*/)) return "comment";
        if (stream.match(/^"(?:[^"\\\\]|\\\\.)*"?/)) return "string";
        if (stream.match(/^\\d+(\\.\\d+)?[smhd](?![A-Za-z0-9_])/)) return "atom";
        if (stream.match(/^\\d+(\\.\\d+)?([eE][+-]?\\d+)?/)) return "number";
        const word = stream.match(/^[A-Za-z_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?/);
        if (word) {
          const text = word[0];
          if (KEYWORDS.has(text)) return "keyword";
          if (LOGIC.has(text)) return "operatorKeyword";
          if (LEVELS.has(text)) return "bool";
          if (FUNCTIONS.has(text) && stream.peek() === "(") return "builtin";
          return "variableName";
        }
        if (stream.match(/^(>=|<=|==|!=|>|<|[-+*\\/])/)) return "operator";
        stream.next();
        return null;
      },
      languageData: { commentTokens: { line: "#" } },
    });
  }
  let view;
  for (let i = 0; i < 200 && !(view = getElement(ELEMENT_ID)); i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  if (!view) return;
  await view.editorPromise;
  view.editor.dispatch({ effects: view.languageConfig.reconfigure([window.iotdeckRuleLanguage]) });
})();
"""


def offset_of(text: str, line: int, column: int) -> int:
    """The str index of a 1-based line and column in `text` (clamped to the text)."""
    lines = text.split("\n")
    line = min(max(line, 1), len(lines))
    start = sum(len(previous) + 1 for previous in lines[: line - 1])
    return min(start + max(column, 1) - 1, len(text))


def span_at(text: str, offset: int) -> tuple[int, int] | None:
    """The characters to underline for a finding at `offset`: its word, string or character.

    At the end of a line or of the text ("found the end of the text"), the last character
    before it is marked, so the spot stays visible.
    """
    if not text.strip():
        return None
    if offset >= len(text) or text[offset] in "\n":
        before = text[:offset].rstrip()
        return (len(before) - 1, len(before)) if before else None
    for pattern in (_STRING, _WORD):
        if match := pattern.match(text, offset):
            return offset, match.end()
    return offset, offset + 1


def check_text(
    text: str, *, retention_days: int, known_metrics: set[str] | None
) -> list[Diagnostic]:
    """What is wrong with an editor's text, as the save would find it (one rule, no errors)."""
    if len(text) > MAX_EXPRESSION_LENGTH:  # refused unparsed, as the save refuses it
        message = f"the text is {len(text)} characters long; at most {MAX_EXPRESSION_LENGTH}"
        return [Diagnostic(1, 1, message, "ERROR")]
    found = validate(text, retention_days=retention_days, known_metrics=known_metrics)
    if any(d.severity == "ERROR" for d in found):
        return found
    try:
        parse_rule(text)  # the editor stores one rule per alert rule
    except RuleSyntaxError as error:
        return error.diagnostics + found
    return found


@dataclass(frozen=True)
class Marks:
    """The decorations and line tooltips that show diagnostics inside CodeMirror."""

    decorations: list[dict]
    tooltips: dict[int, str]


def marks(text: str, diagnostics: list[Diagnostic]) -> Marks:
    """Underline each finding's spot, tint its line and put its message on the line's tooltip."""
    decorations: list[dict] = []
    tooltips: dict[int, list[str]] = {}
    line_count = text.count("\n") + 1
    for diagnostic in diagnostics:
        kind = "error" if diagnostic.severity == "ERROR" else "warning"
        line = min(max(diagnostic.line, 1), line_count)
        span = span_at(text, offset_of(text, diagnostic.line, diagnostic.column))
        if span is not None:
            start, end = span
            decorations.append(
                {"kind": "mark", "from": start, "to": end, "class": f"cm-rule-{kind}"}
            )
            line = text.count("\n", 0, start) + 1
        decorations.append({"kind": "line", "line": line, "class": f"cm-rule-{kind}-line"})
        word = "Error" if kind == "error" else "Warning"
        tooltips.setdefault(line, []).append(f"{word}: {diagnostic.message}")
    return Marks(decorations, {line: "\n".join(texts) for line, texts in tooltips.items()})


class RuleCodeEditor(ui.codemirror):
    """CodeMirror with the rule language's colours and diagnostic marks."""

    def __init__(self, value: str, *, on_text: Callable[[str], None]) -> None:
        """Edit `value`; `on_text(text)` runs on every change (the caller debounces)."""
        super().__init__(
            value,
            on_change=lambda event: on_text(event.value or ""),
            theme="vscodeLight",
            indent="  ",
            line_wrapping=True,
        )
        ui.add_css(_CSS)
        self.classes("rule-code w-full").mark("rule-code")
        self.client.on_connect(self._install_language)

    def _install_language(self) -> None:
        self.client.run_javascript(_LANGUAGE_JS.replace("ELEMENT_ID", str(self.id)))

    def show_marks(self, shown: Marks) -> None:
        """Replace the diagnostic marks."""
        self.decorations = shown.decorations
        self.line_tooltips = shown.tooltips


class DiagnosticList(ui.column):
    """The findings under the editor; clicking one scrolls the editor to its line."""

    def __init__(self, editor: RuleCodeEditor) -> None:
        """Start empty."""
        super().__init__()
        self.editor = editor
        self.classes("w-full gap-0").mark("diagnostics")

    def show(self, diagnostics: list[Diagnostic], *, empty_text: bool) -> None:
        """List `diagnostics`, or say the rule is fine."""
        self.clear()
        with self:
            if empty_text:
                _status("edit_note", "text-slate-500", "Write a rule to check it.")
                return
            if not diagnostics:
                _status("check_circle", "text-green-700", "No problems: the rule can be saved.")
                return
            for diagnostic in diagnostics:
                self._entry(diagnostic)

    def _entry(self, diagnostic: Diagnostic) -> None:
        error = diagnostic.severity == "ERROR"
        tone = "text-red-700" if error else "text-amber-700"
        with ui.row().classes(
            "w-full items-start gap-2 no-wrap py-1.5 px-2 rounded hover:bg-slate-50 cursor-pointer"
        ) as entry:
            ui.icon("error" if error else "warning", size="1.1rem").classes(f"{tone} mt-px")
            ui.label(f"Line {diagnostic.line}, column {diagnostic.column}").classes(
                "font-mono text-xs text-slate-600 bg-slate-100 rounded px-1.5 py-0.5 "
                "whitespace-nowrap mt-px"
            ).mark("diagnostic-position")
            ui.label(diagnostic.message).classes(f"text-sm {tone} break-words min-w-0").mark(
                "diagnostic-message"
            )
        entry.mark(f"diagnostic diagnostic-{diagnostic.severity.lower()}")
        entry.props(f"data-line={diagnostic.line} data-column={diagnostic.column}")
        entry.on("click", lambda: self.editor.reveal_line(diagnostic.line))


def _status(icon: str, tone: str, text: str) -> None:
    with ui.row().classes(f"items-center gap-2 py-1.5 px-2 {tone}"):
        ui.icon(icon, size="1.1rem")
        ui.label(text).classes("text-sm").mark("diagnostics-status")
