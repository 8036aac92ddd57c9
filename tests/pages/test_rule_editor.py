"""The rule editor: diagnostics as you type, the quick form, save, delete, test against history."""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from nicegui import ElementFilter, ui
from nicegui.testing import User, UserInteraction
from sqlmodel import select

from app.core import db
from app.core.models import AlertRule, Device
from app.services import rules, telemetry
from app.services.rules import RuleInput
from app.services.telemetry import Point
from components.rule_editor import marks, span_at
from rules.checks import validate
from tests.pages.conftest import Account
from tests.waiting import wait_for

CHECKS = 20  # 100 ms apart: the inline check waits for a pause of CHECK_DELAY in typing
BROKEN = 'rule "Overheat"\n  when temperature = 30\n'


def _editor(user: User) -> ui.codemirror:
    (editor,) = user.find(ui.codemirror).elements
    assert isinstance(editor, ui.codemirror)
    return editor


def _type(user: User, text: str) -> None:
    """Replace the editor's text (what typing does to its value, change by change)."""
    user.find(ui.codemirror).clear().type(text)


def _positions(user: User) -> list[str]:
    with user:
        return [label.text for label in ElementFilter(kind=ui.label, marker="diagnostic-position")]


async def _see(user: User, *args: object, **kwargs: object) -> None:
    """`should_see`, patient enough for the check that runs once typing pauses."""
    await user.should_see(*args, retries=CHECKS, **kwargs)  # type: ignore[arg-type]


def _choose(user: User, marker: str, option: str) -> None:
    select = user.find(marker=marker).click()
    UserInteraction(user, select.elements, option).click()


def _all_rules() -> list[AlertRule]:
    with db.session_scope() as session:
        return list(session.exec(select(AlertRule)))


def _rule(text: str) -> uuid.UUID:
    with db.session_scope() as session:
        return rules.create_rule(session=session, data=RuleInput(expression=text)).id


async def test_broken_rule_shows_its_diagnostic_with_line_and_column(
    user: User, operator: Account
) -> None:
    del operator
    await user.open("/rules/new")
    await _see(user, marker="diagnostics-status", content="No problems")
    _type(user, BROKEN)
    await _see(user, marker="diagnostic-position", content="Line 2, column 20")
    await _see(user, "found `=`, expected a comparison")
    await _see(user, "did you mean `==`?")
    editor = _editor(user)
    # the `=` is underlined and its line tinted; the message is the line's tooltip
    offset = BROKEN.index("= 30")
    assert {"kind": "mark", "from": offset, "to": offset + 1, "class": "cm-rule-error"} in (
        editor.decorations
    )
    assert {"kind": "line", "line": 2, "class": "cm-rule-error-line"} in editor.decorations
    assert "did you mean `==`?" in editor.line_tooltips[2]

    _type(user, BROKEN.replace("= 30", "== 30"))  # fixed: the marks go
    await _see(user, marker="diagnostics-status", content="No problems")
    assert _editor(user).decorations == []
    assert _positions(user) == []


async def test_new_rule_starts_from_the_draft_in_the_address(user: User, operator: Account) -> None:
    del operator
    draft = 'rule "Boiler pressure too high"\n  when avg(pressure, 5m) > 3\n'
    await user.open(f"/rules/new?{urlencode({'text': draft})}")
    await _see(user, marker="diagnostics-status", content="No problems")
    assert _editor(user).value == draft


async def test_semantic_errors_and_unknown_metric_warnings(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler")
    with db.session_scope() as session:
        point = Point(device.id, "temperature", datetime.now(UTC), 21.0, None)
        telemetry.write_points(session=session, points=[point], seen_at=datetime.now(UTC))
    await user.open("/rules/new")
    _type(user, 'rule "x"\n  when temprature > 30 and avg(temperature, 0m) > 1\n  severity hot')
    await _see(user, "unknown severity `hot`")
    await _see(user, "the window must be longer than zero")
    await _see(user, "unknown metric `temprature`: no device has reported it yet")
    await _see(user, marker="diagnostic-warning")
    await _see(user, marker="diagnostic-position", content="Line 2, column 8")


async def test_two_rules_in_one_text_are_refused_inline(user: User, operator: Account) -> None:
    del operator
    await user.open("/rules/new")
    _type(user, 'rule "a" when a > 1\nrule "b" when b > 1')
    await _see(user, "expected exactly one rule, found 2")
    await _see(user, marker="diagnostic-position", content="Line 2, column 1")


def test_marks_point_at_the_word_or_the_last_character() -> None:
    text = 'rule "x" when avrg(t, 5m) > 1'
    assert span_at(text, text.index("avrg")) == (text.index("avrg"), text.index("("))
    ending = 'rule "x" when a >'
    (found,) = validate(ending)
    shown = marks(ending, [found])
    assert shown.decorations[0]["from"] == len(ending) - 1  # the `>` before the end
    assert shown.tooltips == {1: f"Error: {found.message}"}


async def test_quick_form_writes_canonical_text(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    add_device("Boiler", "thermostat")
    await user.open("/rules/new")
    user.find(marker="quick-name").clear().type("Boiler hot")
    user.find(marker="quick-metric").clear().type("temperature")
    UserInteraction(
        user, user.find(marker="quick-operator").click().elements, "≥ at or above"
    ).click()
    user.find(marker="quick-threshold").clear().type("72.5")
    UserInteraction(user, user.find(marker="quick-severity").click().elements, "Critical").click()
    scope = user.find(marker="quick-scope").click()
    UserInteraction(user, scope.elements, "Devices of a type").click()
    UserInteraction(user, user.find(marker="quick-type").click().elements, "thermostat").click()
    user.find(marker="quick-for").type("2m")
    user.find(marker="quick-cooldown").clear().type("10m")
    user.find(marker="quick-apply").click()
    expected = (
        'rule "Boiler hot"\n'
        '  on type "thermostat"\n'
        "  when temperature >= 72.5 for 2m\n"
        "  severity critical\n"
        "  cooldown 10m\n"
    )
    assert _editor(user).value == expected
    await _see(user, marker="diagnostics-status", content="No problems")


async def test_quick_form_keeps_other_clauses_and_names_bad_fields(
    user: User, operator: Account
) -> None:
    del operator
    rule_id = _rule(
        'rule "Freezer" when temperature > -15 message "check the door" '
        "clear when temperature < -18"
    )
    await user.open(f"/rules/{rule_id}")
    # the form was filled from the stored text
    (threshold,) = user.find(marker="quick-threshold").elements
    assert threshold.value == -15
    user.find(marker="quick-cooldown").clear().type("5 minutes")
    user.find(marker="quick-apply").click()
    await _see(user, "Cooldown must be a number and a unit: 30s, 5m, 2h or 1d")
    user.find(marker="quick-cooldown").clear().type("15m")
    user.find(marker="quick-threshold").clear().type("-12")
    user.find(marker="quick-apply").click()
    assert _editor(user).value == (
        'rule "Freezer"\n'
        "  when temperature > -12\n"
        "  cooldown 15m\n"
        '  message "check the door"\n'
        "  clear when temperature < -18\n"
    )


async def test_save_creates_the_rule(user: User, operator: Account) -> None:
    del operator
    await user.open("/rules/new")
    text = 'rule "Too hot"\n  when temperature > 30\n  severity critical\n'
    _type(user, text)
    user.find(marker="save-rule").click()
    await _see(user, "Rule “Too hot” created")
    (stored,) = _all_rules()
    assert (stored.name, stored.expression, stored.severity) == (
        "Too hot",
        text.strip(),
        "CRITICAL",
    )
    await _see(user, marker="rule-title", content="Too hot")  # now the rule's own page


async def test_save_refusal_shows_field_and_reason_and_stores_nothing(
    user: User, operator: Account
) -> None:
    del operator
    await user.open("/rules/new")
    _type(user, BROKEN)
    user.find(marker="save-rule").click()  # before the inline check has even run
    await _see(user, marker="save-error", content="expression: line 2, column 20")
    assert _all_rules() == []


async def test_update_and_delete_an_existing_rule(user: User, operator: Account) -> None:
    del operator
    rule_id = _rule('rule "Old" when temperature > 30')
    await user.open(f"/rules/{rule_id}")
    assert _editor(user).value == 'rule "Old" when temperature > 30'
    _type(user, 'rule "New" when temperature > 35')
    user.find(marker="save-rule").click()
    await _see(user, "Rule “New” saved")
    (stored,) = _all_rules()
    assert (stored.id, stored.name, stored.threshold) == (rule_id, "New", 35.0)

    user.find(marker="delete-rule").click()
    await _see(user, "Delete this rule?")
    user.find(marker="confirm-ok").click()
    await _see(user, "Rule “New” deleted")
    assert _all_rules() == []


async def test_viewer_reads_but_cannot_change(user: User, viewer: Account) -> None:
    del viewer
    rule_id = _rule('rule "Overheat" when temperature > 30')
    await user.open(f"/rules/{rule_id}")
    await _see(user, marker="read-only")
    await user.should_not_see(marker="save-rule")
    await user.should_not_see(marker="delete-rule")
    assert _editor(user).enabled is False
    _type(user, 'rule "Changed" when t > 1')  # a disabled editor takes no typing
    assert _editor(user).value == 'rule "Overheat" when temperature > 30'


async def test_unknown_rule_shows_not_found(user: User, operator: Account) -> None:
    del operator
    await user.open(f"/rules/{uuid.uuid4()}")
    await _see(user, "Rule not found")
    await user.open("/rules/not-a-uuid")
    await _see(user, "Rule not found")


async def test_test_against_history_counts_firings_and_charts_them(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    hot, calm = add_device("Hot boiler"), add_device("Calm boiler")
    now = datetime.now(UTC).replace(microsecond=0)
    points = []
    # the hot boiler crosses 30 twice (two episodes), the calm one never does
    for minutes, value in ((300, 20), (280, 31), (260, 22), (200, 33), (180, 21)):
        points.append(Point(hot.id, "temperature", now - timedelta(minutes=minutes), value, "°C"))
        points.append(Point(calm.id, "temperature", now - timedelta(minutes=minutes), 20, "°C"))
    with db.session_scope() as session:
        telemetry.write_points(session=session, points=points, seen_at=now)
    await user.open("/rules/new")
    _type(user, 'rule "Hot" when temperature > 30')
    user.find(marker="test-rule").click()
    await _see(user, marker="replay-summary", content="Would have fired 2 times on 1 device")
    await _see(user, marker="replay-count", content="2")
    await _see(user, marker="replay-chart-plot")  # the chart loads after the summary
    (plot,) = user.find(marker="replay-chart-plot").elements
    assert isinstance(plot, ui.plotly)
    assert plot.props["data-device"] == str(hot.id)
    assert len([s for s in plot.figure["layout"]["shapes"] if s["type"] == "rect"]) == 2
    assert plot.figure["data"][-1]["y"] == [31, 33]  # markers where it would have fired
    assert _all_rules() == []  # a test stores nothing


def _charted(user: User) -> str | None:
    """The device whose chart the replay shows (None before it is drawn)."""
    with user:
        plots = list(ElementFilter(marker="replay-chart-plot"))
    return plots[0].props["data-device"] if plots else None


async def test_the_chart_button_of_a_row_charts_its_device(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    boilers = add_device("Boiler A"), add_device("Boiler B")
    now = datetime.now(UTC).replace(microsecond=0)
    points = [
        Point(boiler.id, "temperature", now - timedelta(minutes=minutes), value, "°C")
        for boiler in boilers
        for minutes, value in ((120, 20), (100, 31))
    ]
    with db.session_scope() as session:
        telemetry.write_points(session=session, points=points, seen_at=now)
    await user.open("/rules/new")
    _type(user, 'rule "Hot" when temperature > 30')
    user.find(marker="test-rule").click()
    await _see(user, marker="replay-summary", content="Would have fired 2 times on 2 devices")
    first = await wait_for(lambda: _charted(user))  # the first row's device, charted at once
    other = next(str(boiler.id) for boiler in boilers if str(boiler.id) != first)
    buttons = sorted(user.find(marker="replay-chart").elements, key=lambda button: button.id)
    UserInteraction(user, {buttons[1]}, None).click()  # the second row's Chart
    await wait_for(lambda: _charted(user) == other)


async def test_test_against_history_of_a_rule_that_never_fires(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    add_device("Boiler")
    await user.open("/rules/new")
    _type(user, 'rule "Never" when temperature > 1000')
    user.find(marker="test-rule").click()
    await _see(user, "Would not have fired on any of the 1 device it watches")
    _type(user, BROKEN)
    user.find(marker="test-rule").click()
    await _see(user, marker="replay-error", content="line 2, column 20")
