"""Small inline chips: a device type, a user role."""

from nicegui import ui

from app.models import Role

_ROLE_TONE = {
    Role.ADMIN: "bg-indigo-50 text-indigo-800 ring-indigo-600/30",
    Role.OPERATOR: "bg-sky-50 text-sky-800 ring-sky-600/30",
    Role.VIEWER: "bg-slate-100 text-slate-700 ring-slate-500/30",
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
