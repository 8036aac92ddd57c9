"""docs/rules.md stays honest: its examples are run through the real parser and checks.

Conventions in docs/rules.md:

- A fenced block tagged `rule` must parse (`rules.parser.parse`), have no ERROR from
  `rules.checks.check`, and survive the canonical-form round trip
  (`parse(format_rules(rules)) == rules`).
- A fenced block tagged `rule-error` must be followed (after optional blank lines) by an
  HTML comment `<!-- error: TEXT -->`. The block must fail, in the parser or with an ERROR
  from the checks, and TEXT must be contained in `line L, column C: MESSAGE` of one of the
  findings. So TEXT may be a bare message fragment or start with its line and column.
- Blocks with any other tag (`text`, none) are not checked.
"""

import re
from pathlib import Path

import pytest

from rules.checks import check
from rules.errors import Diagnostic, RuleSyntaxError
from rules.format import format_rules
from rules.parser import parse

DOC = Path(__file__).resolve().parents[3] / "docs" / "rules.md"
_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_EXPECTED = re.compile(r"\A\s*<!--\s*error:\s*(.*?)\s*-->", re.DOTALL)


def _blocks(tag: str) -> list[tuple[int, str, str]]:
    """(line in the doc, block text, what follows the block) for each block with `tag`."""
    text = DOC.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        if match.group(1) == tag:
            line = text.count("\n", 0, match.start()) + 1
            found.append((line, match.group(2), text[match.end() :]))
    return found


RULE_BLOCKS = _blocks("rule")
ERROR_BLOCKS = _blocks("rule-error")


def _findings(text: str) -> list[Diagnostic]:
    """Syntax errors if `text` does not parse, else the checks' ERRORs."""
    try:
        rules = parse(text)
    except RuleSyntaxError as exc:
        return exc.diagnostics
    return [d for d in check(rules, text=text) if d.severity == "ERROR"]


def _placed(diagnostic: Diagnostic) -> str:
    return f"line {diagnostic.line}, column {diagnostic.column}: {diagnostic.message}"


def _line_id(value: object) -> str:
    """Test ids show the block's line in the doc, not its text."""
    return f"line{value}" if isinstance(value, int) else ""


def test_the_doc_has_examples_of_both_kinds() -> None:
    assert len(RULE_BLOCKS) >= 30
    assert len(ERROR_BLOCKS) >= 15


@pytest.mark.parametrize(
    ("line", "block"), [(line, block) for line, block, _ in RULE_BLOCKS], ids=_line_id
)
def test_rule_block_is_valid(line: int, block: str) -> None:
    rules = parse(block)
    errors = [_placed(d) for d in check(rules, text=block) if d.severity == "ERROR"]
    assert errors == [], f"docs/rules.md line {line}"
    assert parse(format_rules(rules)) == rules, f"docs/rules.md line {line}"


@pytest.mark.parametrize(("line", "block", "after"), ERROR_BLOCKS, ids=_line_id)
def test_rule_error_block_fails_with_its_message(line: int, block: str, after: str) -> None:
    expected = _EXPECTED.match(after)
    assert expected, f"docs/rules.md line {line}: no `<!-- error: ... -->` after the block"
    findings = [_placed(d) for d in _findings(block)]
    assert findings, f"docs/rules.md line {line}: the block is valid"
    assert any(expected.group(1) in found for found in findings), (
        f"docs/rules.md line {line}: {expected.group(1)!r} not in {findings}"
    )


def test_canonical_form_example_is_what_format_writes() -> None:
    """The "Canonical form" section shows a compact rule and then its canonical text."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Canonical form") + 1
    compact, canonical = [block for line, block, _ in RULE_BLOCKS if line > start][:2]
    assert format_rules(parse(compact)) == canonical
