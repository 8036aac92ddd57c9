"""Times as operators read them: "3 min ago" with the exact UTC time on hover."""

from datetime import UTC, datetime

from nicegui import ui

from app.core.models import as_utc

_MINUTE, _HOUR, _DAY = 60, 3600, 86400


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    """ "never", "just now", "3 min ago", "5 h ago", "2 days ago", or the date when older."""
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - as_utc(moment)).total_seconds()
    if seconds < _MINUTE:
        return "just now"
    if seconds < _HOUR:
        return f"{int(seconds // _MINUTE)} min ago"
    if seconds < _DAY:
        return f"{int(seconds // _HOUR)} h ago"
    if seconds < 30 * _DAY:
        days = int(seconds // _DAY)
        return f"{days} day ago" if days == 1 else f"{days} days ago"
    return as_utc(moment).strftime("%Y-%m-%d")


def absolute_time(moment: datetime | None) -> str:
    """The exact time in UTC ("2025-11-29 14:03 UTC"), or "never"."""
    if moment is None:
        return "never"
    return as_utc(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_label(moment: datetime | None, *, relative: bool = True) -> ui.label:
    """A label showing the time (relative by default) with the other form as a tooltip."""
    shown, other = relative_time(moment), absolute_time(moment)
    if not relative:
        shown, other = other, shown
    label = ui.label(shown).classes("whitespace-nowrap")
    if moment is not None:
        label.tooltip(other)
    return label


def set_time(label: ui.label, moment: datetime | None) -> None:
    """Show a new (relative) time on a label made by `time_label`, tooltip included."""
    label.text = relative_time(moment)
    if moment is None:
        return
    tips = [child for child in label.default_slot.children if isinstance(child, ui.tooltip)]
    if tips:
        tips[0].text = absolute_time(moment)
    else:
        label.tooltip(absolute_time(moment))
