"""A device's commands, newest first: what was asked, by whom, and what became of it.

It shows what the page loaded and calls the page back to cancel; it never reads storage
itself. The page redraws it when `iot:commands` says a command moved on.
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nicegui import ui

from app.core.models import CommandStatus, DeviceCommand, as_utc
from app.services.commands import CANCELLABLE, OPEN
from components.chips import command_status_chip
from components.data_table import cell, data_table, row
from components.relative_time import absolute_time, time_label

COLLAPSED_ROWS = 5  # the page stays about telemetry; older commands are one click away
SUMMARY_CHARACTERS = 60
_MINUTE, _HOUR, _DAY = 60, 3600, 86400


@dataclass(frozen=True)
class CommandView:
    """A command with the words for who asked for it."""

    command: DeviceCommand
    user_name: str | None = None  # the operator who sent it
    rule_name: str | None = None  # the rule whose `command` clause sent it


def time_until(moment: datetime, now: datetime | None = None) -> str:
    """ "in 4 min", "in 3 h", "in under a minute", "now" for a time ahead."""
    seconds = (as_utc(moment) - (now or datetime.now(UTC))).total_seconds()
    if seconds <= 0:
        return "now"
    if seconds < _MINUTE:
        return "in under a minute"
    if seconds < _HOUR:
        return f"in {int(seconds // _MINUTE)} min"
    if seconds < _DAY:
        return f"in {int(seconds // _HOUR)} h"
    return f"on {as_utc(moment).strftime('%Y-%m-%d')}"


def summary(document: Any) -> str:
    """Compact one-line JSON, cut to SUMMARY_CHARACTERS."""
    text = json.dumps(document, ensure_ascii=False, separators=(", ", ": "))
    if len(text) <= SUMMARY_CHARACTERS:
        return text
    return text[: SUMMARY_CHARACTERS - 1] + "\u2026"


def _json_line(document: Any, *, classes: str) -> ui.label:
    """One line of JSON; the whole document on hover when the line had to be cut."""
    short = summary(document)
    line = ui.label(short).classes(f"font-mono text-xs break-all {classes}")
    if short.endswith("\u2026"):
        with line:
            ui.tooltip(json.dumps(document, ensure_ascii=False, indent=2)).classes(
                "whitespace-pre font-mono text-xs"
            )
    return line


def _step(label: str, moment: datetime | None) -> None:
    if moment is None:
        return
    ui.label(label).classes("text-slate-500")
    time_label(moment).classes("text-slate-700")


class CommandHistory:
    """Rows of commands with their status chips; Cancel on PENDING and SENT ones for operators."""

    COLUMNS = ("Action", "Status", "Requested", "Timeline", "")

    def __init__(self, *, cancel: Callable[[DeviceCommand], Awaitable[None]] | None) -> None:
        """`cancel` (None for viewers) asks and withdraws a command."""
        self.cancel = cancel
        self.expanded = False  # kept across redraws
        self.on_change: Callable[[], None] = lambda: None

    def show(self, views: list[CommandView], *, more: bool) -> None:
        """Draw the table (the newest COLLAPSED_ROWS unless expanded); `more`: older exist."""
        shown = views if self.expanded else views[:COLLAPSED_ROWS]
        with data_table(list(self.COLUMNS)):
            for view in shown:
                self._row(view)
        hidden = len(views) - len(shown)
        if not hidden and len(views) <= COLLAPSED_ROWS:
            return
        with ui.row().classes(
            "w-full items-center gap-3 px-4 py-1.5 border-t border-slate-200 text-xs text-slate-500"
        ):
            if hidden:
                words = f"Show {hidden} older"
            else:
                words = "Show fewer"
                if more:
                    ui.label(f"The newest {len(views)} are shown.")
            ui.space()
            ui.button(words, on_click=self.toggle).props(
                "flat dense no-caps size=sm color=primary"
            ).mark("toggle-commands")

    def toggle(self) -> None:
        """Show every loaded command, or the newest few again."""
        self.expanded = not self.expanded
        self.on_change()

    def _row(self, view: CommandView) -> None:
        command = view.command
        with row().mark("command-row").props(f"data-command-id={command.id}"):
            with cell(classes="min-w-[11rem]"), ui.column().classes("gap-0.5"):
                ui.label(command.action).classes("font-mono font-medium text-slate-900").mark(
                    "command-action-name"
                )
                if command.params:
                    _json_line(command.params, classes="text-slate-500").mark("command-params")
                else:
                    ui.label("no params").classes("text-xs text-slate-400")
            with cell(classes="min-w-[9rem]"), ui.column().classes("gap-1 items-start"):
                command_status_chip(command.status)
                self._outcome(command)
            with cell(), ui.column().classes("gap-0"):
                time_label(command.created_at).classes("text-slate-700")
                self._requester(view)
            with cell():
                self._timeline(command)
            with cell(right=True, classes="whitespace-nowrap"):
                if self.cancel is not None and command.status in CANCELLABLE:
                    ui.button(
                        "Cancel", on_click=lambda _, shown=command: self._cancel(shown)
                    ).props("outline dense no-caps size=sm color=negative padding='3px 12px'").mark(
                        "cancel-command"
                    )

    async def _cancel(self, command: DeviceCommand) -> None:
        assert self.cancel is not None
        await self.cancel(command)

    @staticmethod
    def _outcome(command: DeviceCommand) -> None:
        if command.error:
            tone = "text-red-700" if command.status == CommandStatus.FAILED else "text-slate-500"
            ui.label(command.error).classes(f"text-xs break-words max-w-[16rem] {tone}").mark(
                "command-error"
            )
        elif command.result is not None:
            _json_line(command.result, classes="text-slate-600 max-w-[16rem]").mark(
                "command-result"
            )

    @staticmethod
    def _requester(view: CommandView) -> None:
        command = view.command
        with ui.row().classes("items-center gap-1 no-wrap text-xs text-slate-500"):
            if command.rule_id is not None and view.rule_name:
                ui.label("by rule")
                ui.link(view.rule_name, f"/rules/{command.rule_id}").classes(
                    "text-primary no-underline hover:underline truncate max-w-[10rem]"
                ).mark("command-rule")
                return
            if command.created_by is not None and view.user_name:
                who = f"by {view.user_name}"
            else:  # operators and rules both leave their id; it is gone with them
                who = "sender since deleted"
            ui.label(who).classes("truncate max-w-[12rem]").mark("command-sender")

    @staticmethod
    def _timeline(command: DeviceCommand) -> None:
        with ui.element("div").classes(
            "grid grid-cols-[4.5rem_auto] gap-x-1 gap-y-0 text-xs w-max"
        ) as steps:
            _step("Sent", command.sent_at)
            _step("Acked", command.acknowledged_at)
            finished = "Failed" if command.status == CommandStatus.FAILED else "Executed"
            _step(finished, command.executed_at)
            if command.status in OPEN:
                ui.label("Expires").classes("text-slate-500")
                ui.label(time_until(command.expires_at)).classes(
                    "text-slate-700 whitespace-nowrap"
                ).tooltip(absolute_time(command.expires_at))
            elif command.status in (CommandStatus.EXPIRED, CommandStatus.CANCELLED):
                word = "Expired" if command.status == CommandStatus.EXPIRED else "Cancelled"
                _step(word, command.updated_at)
        steps.mark("command-timeline")
