"""Read-only views of JSON documents (device metadata); always text, never HTML."""

import json
from typing import Any

from nicegui import ui


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # numbers, true/false, null as JSON spells them


def json_block(value: Any) -> ui.label:
    """Indented JSON in a monospace block; text content, so markup in values stays inert."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return ui.label(text).classes(
        "whitespace-pre font-mono text-xs leading-5 text-slate-800 bg-slate-50 rounded "
        "border border-slate-200 px-3 py-2 w-full overflow-x-auto"
    )


def metadata_view(data: dict[str, Any]) -> ui.column:
    """A key/value list of a JSON object; nested objects and lists as indented JSON."""
    with ui.column().classes("w-full gap-0") as view:
        if not data:
            ui.label("No metadata").classes("text-sm text-slate-500 py-2")
        for key in sorted(data):
            value = data[key]
            with ui.row().classes(
                "w-full no-wrap items-baseline gap-6 py-2.5 border-b border-slate-100 "
                "last:border-b-0"
            ):
                ui.label(key).classes(
                    "w-40 shrink-0 font-mono text-xs text-slate-500 break-all"
                ).mark("metadata-key")
                with ui.element("div").classes("flex-1 min-w-0"):
                    if isinstance(value, dict | list):
                        json_block(value)
                    else:
                        ui.label(_scalar(value)).classes("text-sm text-slate-900 break-words")
    return view.mark("metadata")
