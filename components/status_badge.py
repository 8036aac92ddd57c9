"""A coloured pill for a device's connectivity status."""

from nicegui import ui

from app.models import DeviceStatus

# (label, pill classes, dot classes) per status; unknown values fall back to UNKNOWN's look
_LOOK = {
    DeviceStatus.ONLINE: ("Online", "bg-green-50 text-green-800 ring-green-600/30", "bg-green-600"),
    DeviceStatus.OFFLINE: ("Offline", "bg-red-50 text-red-800 ring-red-600/30", "bg-red-600"),
    DeviceStatus.UNKNOWN: (
        "Unknown",
        "bg-slate-100 text-slate-700 ring-slate-500/30",
        "bg-slate-400",
    ),
}


def status_label(status: DeviceStatus | str) -> str:
    """The operator-facing word for a status ("Online", "Offline", "Unknown")."""
    return _LOOK.get(str(status), _LOOK[DeviceStatus.UNKNOWN])[0]


def status_badge(status: DeviceStatus | str) -> ui.element:
    """A pill with a dot and the status word, coloured by status."""
    label, pill, dot = _LOOK.get(str(status), _LOOK[DeviceStatus.UNKNOWN])
    with ui.element("span").classes(
        f"inline-flex items-center gap-1.5 rounded-full px-2.5 py-0.5 text-xs font-medium "
        f"ring-1 ring-inset whitespace-nowrap {pill}"
    ) as badge:
        ui.element("span").classes(f"inline-block w-1.5 h-1.5 rounded-full {dot}")
        ui.label(label)
    return badge.mark("status-badge")
