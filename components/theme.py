"""The one palette and the few global styles every page shares."""

from nicegui import ui

# restrained: one blue for actions, slate greys for text and chrome, semantic colours for state
PALETTE = {
    "primary": "#1d4ed8",
    "secondary": "#475569",
    "accent": "#0f766e",
    "dark": "#0f172a",
    "positive": "#15803d",
    "negative": "#b91c1c",
    "info": "#0369a1",
    "warning": "#b45309",
}

_CSS = """
body { background: #f8fafc; color: #0f172a; }
.nicegui-content { padding: 0; }
.font-mono { font-family: ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono",
  "Liberation Mono", monospace; }
.iotdeck-table { width: 100%; border-collapse: collapse; }
.iotdeck-table th { text-align: left; font-weight: 600; font-size: 0.75rem; color: #64748b;
  text-transform: uppercase; letter-spacing: 0.04em; padding: 10px 16px;
  border-bottom: 1px solid #e2e8f0; background: #f8fafc; white-space: nowrap; }
.iotdeck-table td { padding: 10px 16px; border-bottom: 1px solid #f1f5f9; font-size: 0.875rem;
  vertical-align: middle; }
.iotdeck-table tbody tr:last-child td { border-bottom: none; }
.iotdeck-table tbody tr:hover td { background: #f8fafc; }
"""


def apply_theme() -> None:
    """Set the palette and the shared styles on the current page."""
    ui.colors(**PALETTE)
    ui.add_css(_CSS)
