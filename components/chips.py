"""Small inline chips: a device type, a user role, an alert's severity and status, a command's
status."""

from nicegui import ui

from app.core.models import AlertSeverity, AlertStatus, CommandStatus, Role

_ROLE_TONE = {
    Role.ADMIN: "bg-indigo-50 text-indigo-800 ring-indigo-600/30",
    Role.OPERATOR: "bg-sky-50 text-sky-800 ring-sky-600/30",
    Role.VIEWER: "bg-slate-100 text-slate-700 ring-slate-500/30",
}
# (word, pill classes, icon) per severity: colour and icon both say it, for colour-blind eyes
_SEVERITY_LOOK = {
    AlertSeverity.CRITICAL: ("Critical", "bg-red-50 text-red-800 ring-red-600/30", "error"),
    AlertSeverity.WARNING: ("Warning", "bg-amber-50 text-amber-800 ring-amber-600/30", "warning"),
    AlertSeverity.INFO: ("Info", "bg-sky-50 text-sky-800 ring-sky-600/30", "info"),
}
_STATUS_LOOK = {
    AlertStatus.ACTIVE: ("Active", "bg-red-600 text-white ring-red-600"),
    AlertStatus.ACKNOWLEDGED: ("Acknowledged", "bg-amber-50 text-amber-800 ring-amber-600/30"),
    AlertStatus.RESOLVED: ("Resolved", "bg-slate-100 text-slate-600 ring-slate-500/30"),
}
# (word, pill classes, icon) per command status: waiting greys and blues, outcomes in
# green, red and amber; the icon repeats it for colour-blind eyes
_COMMAND_LOOK = {
    CommandStatus.PENDING: ("Pending", "bg-slate-100 text-slate-700 ring-slate-500/30", "schedule"),
    CommandStatus.SENT: ("Sent", "bg-sky-50 text-sky-800 ring-sky-600/30", "north_east"),
    CommandStatus.ACKNOWLEDGED: (
        "Acknowledged",
        "bg-indigo-50 text-indigo-800 ring-indigo-600/30",
        "done",
    ),
    CommandStatus.EXECUTED: (
        "Executed",
        "bg-green-50 text-green-800 ring-green-600/30",
        "done_all",
    ),
    CommandStatus.FAILED: ("Failed", "bg-red-50 text-red-800 ring-red-600/30", "error"),
    CommandStatus.EXPIRED: ("Expired", "bg-amber-50 text-amber-800 ring-amber-600/30", "timer_off"),
    CommandStatus.CANCELLED: ("Cancelled", "bg-white text-slate-500 ring-slate-400/40", "block"),
}


def type_chip(device_type: str) -> ui.label:
    """A device type as a quiet monospace chip (types are identifiers, not prose)."""
    return ui.label(device_type).classes(
        "inline-block font-mono text-xs text-slate-700 bg-slate-100 rounded px-1.5 py-0.5"
    )


def role_chip(role: Role | str) -> ui.label:
    """A role as a small coloured chip."""
    tone = _ROLE_TONE.get(str(role), _ROLE_TONE[Role.VIEWER])
    return ui.label(str(role)).classes(
        f"rounded px-1.5 py-0.5 text-[10px] font-semibold tracking-wide ring-1 ring-inset {tone}"
    )


def _icon_pill(word: str, tone: str, icon: str) -> ui.element:
    """A rounded pill with an icon and a word, coloured by `tone` (Tailwind classes)."""
    with ui.element("span").classes(
        "inline-flex items-center gap-1 rounded-full pl-1.5 pr-2.5 py-0.5 text-xs font-medium "
        f"ring-1 ring-inset whitespace-nowrap {tone}"
    ) as chip:
        ui.icon(icon, size="0.9rem")
        ui.label(word)
    return chip


def severity_chip(severity: AlertSeverity | str) -> ui.element:
    """An alert severity as a coloured pill with its icon ("Critical", "Warning", "Info")."""
    word, tone, icon = _SEVERITY_LOOK.get(str(severity), _SEVERITY_LOOK[AlertSeverity.WARNING])
    return _icon_pill(word, tone, icon).mark(f"severity-chip severity-{str(severity).lower()}")


def alert_status_chip(status: AlertStatus | str) -> ui.label:
    """An alert status as a small pill; an ACTIVE alert is the loudest."""
    word, tone = _STATUS_LOOK.get(str(status), _STATUS_LOOK[AlertStatus.RESOLVED])
    return (
        ui.label(word)
        .classes(
            "inline-block rounded px-1.5 py-0.5 text-[11px] font-semibold tracking-wide "
            f"ring-1 ring-inset whitespace-nowrap {tone}"
        )
        .mark(f"alert-status status-{str(status).lower()}")
    )


def command_status_chip(status: CommandStatus | str) -> ui.element:
    """A command status as a coloured pill with its icon ("Pending" ... "Executed")."""
    word, tone, icon = _COMMAND_LOOK.get(str(status), _COMMAND_LOOK[CommandStatus.PENDING])
    chip = _icon_pill(word, tone, icon)
    chip.props(f"data-command-status={status}")  # for browser tests: the word is also a step
    return chip.mark(f"command-status status-{str(status).lower()}")
