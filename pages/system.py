"""The System page (ADMIN only): the processes alive, the partitions, who evaluates each
and their lag; read again every few seconds."""

import time

from nicegui import ui

from app.core.auth import has_role
from app.core.models import Role
from app.services.system import PartitionStatus, ProcessStatus, SystemStatus, system_status
from components.data_table import cell, data_table, row
from components.empty_state import empty_state, forbidden
from components.frame import frame, page_heading
from pages.auth import current_user

REFRESH_SECONDS = 5.0
# an unread backlog or an entry pending this long is shown in amber (RuleStreamBehind's
# thresholds, which alert after 5 minutes of it)
BEHIND_ENTRIES = 1000
BEHIND_SECONDS = 120.0


def _tile(label: str, value: str, note: str, *, bad: bool = False) -> None:
    tone = "border-red-200 bg-red-50" if bad else "border-slate-200 bg-white"
    with ui.column().classes(f"gap-0.5 rounded-lg border px-4 py-3 min-w-0 {tone}"):
        ui.label(label).classes("text-xs font-medium uppercase tracking-wide text-slate-500")
        ui.label(value).classes(
            f"text-2xl font-semibold {'text-red-700' if bad else 'text-slate-900'}"
        ).mark(f"system-{label.lower()}")
        ui.label(note).classes("text-xs text-slate-500")


def _summary(status: SystemStatus) -> None:
    count = len(status.partitions)
    evaluated = count - status.unowned
    with ui.element("div").classes("w-full grid grid-cols-2 md:grid-cols-4 gap-3"):
        _tile("Partitions", str(count), "IOTDECK_PARTITIONS")
        _tile(
            "Evaluated",
            f"{evaluated} / {count}",
            "partitions with an owner" if not status.unowned else "some have no owner",
            bad=bool(status.unowned),
        )
        evaluating = len(status.evaluating)
        _tile("Processes", str(len(status.processes)), f"alive, {evaluating} evaluating rules")
        _tile("Backlog", f"{status.backlog:,}", "entries unread or unacknowledged")


def _processes(status: SystemStatus) -> None:
    if not status.evaluating:
        empty_state(
            "power_off",
            "No process evaluates rules",
            "Start `iotdeck worker` (or `iotdeck serve` without --no-workers).",
        )
    if not status.processes:
        return
    headers = ["Kind", "Host", "PID", "Up", "Rule partitions", "Heartbeat"]
    with data_table(headers, align_right=frozenset({2})):
        for process in status.processes:
            _process_row(process)


def _process_row(process: ProcessStatus) -> None:
    with row().mark("system-process"):
        with cell(), ui.row().classes("items-center gap-2 no-wrap"):
            ui.label(process.kind).classes("font-medium")
            if process.this_process:
                ui.badge("this page's process").props("outline color=primary")
        with cell():
            ui.label(process.host)
        with cell(right=True):
            ui.label(str(process.pid))
        with cell():
            ui.label(_since(process.started))
        with cell(), ui.row().classes("items-baseline gap-2 no-wrap"):
            if process.partitions:
                ui.label(str(len(process.partitions))).classes("font-semibold")
                ui.label(_listed(process.partitions)).classes("text-xs text-slate-500")
            elif process.partitions is None:
                ui.label("-").classes("text-slate-400")
            else:
                ui.label("none: standing by").classes("text-slate-500")
        with cell():
            seen = process.seen_seconds
            ui.label("just now" if seen < 1 else f"{seen:.0f} s ago")


def _since(started: float | None) -> str:
    """How long a process has been up, as people say it."""
    if started is None:
        return "-"
    seconds = max(0, int(time.time() - started))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _listed(partitions: tuple[int, ...]) -> str:
    """Partition numbers as people read them: runs shortened ("0-3, 8, 10-11")."""
    runs: list[list[int]] = []
    for number in partitions:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _partitions(status: SystemStatus, names: dict[str, str]) -> None:
    headers = ["Partition", "Evaluated by", "In stream", "Unread", "Pending", "Oldest pending"]
    with data_table(headers, align_right=frozenset({0, 2, 3, 4, 5})):
        for partition in status.partitions:
            _partition_row(partition, names)


def _partition_row(partition: PartitionStatus, names: dict[str, str]) -> None:
    lag = partition.lag
    behind = lag is not None and (
        lag.undelivered > BEHIND_ENTRIES or lag.oldest_pending_seconds > BEHIND_SECONDS
    )
    with row().mark(f"system-partition-{partition.number}"):
        with cell(right=True):
            ui.label(str(partition.number)).classes("font-medium")
        with cell():
            if partition.owner is None:
                ui.label("no owner").classes("text-red-700 font-medium")
            else:
                ui.label(names.get(partition.owner, partition.owner)).classes("font-mono text-xs")
        values = (
            ["-"] * 4
            if lag is None
            else [
                f"{lag.length:,}",
                f"{lag.undelivered:,}",
                f"{lag.pending:,}",
                f"{lag.oldest_pending_seconds:.0f} s" if lag.pending else "-",
            ]
        )
        for value in values:
            with cell(right=True):
                ui.label(value).classes("text-amber-700 font-medium" if behind else "")


class SystemView:
    """The page's body, drawn again from a fresh reading every REFRESH_SECONDS."""

    def __init__(self) -> None:
        self.body = ui.column().classes("w-full gap-4").mark("system")

    async def update(self) -> None:
        status = await system_status()
        self.body.clear()
        with self.body:
            self._show(status)

    @staticmethod
    def _show(status: SystemStatus) -> None:
        if status.error:
            with ui.row().classes(
                "w-full items-center gap-2 rounded-md border border-amber-200 bg-amber-50 "
                "px-4 py-2 text-sm text-amber-900"
            ):
                ui.icon("warning", size="xs")
                ui.label(status.error).mark("system-error")
        how = (
            "Shared through Redis: each process holds leases on its share of the partitions; "
            "a dead one's go to the others within seconds."
            if status.shared
            else "One process: without Redis, this process evaluates every partition."
        )
        ui.label(how).classes("text-sm text-slate-600").mark("system-mode")
        _summary(status)
        names = {p.name: f"{p.host} · {p.pid}" for p in status.processes}
        with ui.card().classes("w-full p-0 gap-0 shadow-none border border-slate-200"):
            ui.label("Processes").classes("px-4 pt-3 pb-2 text-sm font-semibold text-slate-700")
            _processes(status)
        with ui.card().classes("w-full p-0 gap-0 shadow-none border border-slate-200"):
            ui.label("Partitions").classes("px-4 pt-3 pb-2 text-sm font-semibold text-slate-700")
            _partitions(status, names)


def create() -> None:
    """Register /system."""

    @ui.page("/system")
    async def system_page() -> None:
        user = current_user()
        with frame("System", user=user):
            if not has_role(user, Role.ADMIN):
                forbidden("Only administrators can see the system's processes and partitions.")
                return
            subtitle = "The processes alive, who evaluates which partition, how far behind"
            page_heading("System", subtitle)
            view = SystemView()
            await view.update()
            ui.timer(REFRESH_SECONDS, view.update, immediate=False)
