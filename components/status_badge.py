"""A coloured pill for a device's connectivity status."""

from nicegui import ui

from app.core.models import DeviceStatus

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


class StatusBadge(ui.element):
    """A pill with a dot and the status word, coloured by status; `set_status` recolours it."""

    def __init__(self, status: DeviceStatus | str) -> None:
        """Draw the pill for `status`."""
        super().__init__("span")
        self.mark("status-badge")
        with self:
            self._dot = ui.element("span")
            self._word = ui.label()
        self.status = ""
        self.set_status(status)

    def set_status(self, status: DeviceStatus | str) -> None:
        """Show `status` (a live change)."""
        self.status = str(status)
        label, pill, dot = _LOOK.get(self.status, _LOOK[DeviceStatus.UNKNOWN])
        self.classes(
            replace="inline-flex items-center gap-1.5 rounded-full px-2.5 py-0.5 text-xs "
            f"font-medium ring-1 ring-inset whitespace-nowrap {pill}"
        )
        self._dot.classes(replace=f"inline-block w-1.5 h-1.5 rounded-full {dot}")
        self._word.text = label


def status_badge(status: DeviceStatus | str) -> StatusBadge:
    """A pill with a dot and the status word, coloured by status."""
    return StatusBadge(status)
