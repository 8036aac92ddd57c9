"""Plotly figures and colours of dashboard widgets: pure functions of their data.

The device page's charts (components/telemetry_chart.py) set the look: the same fonts,
greys and time format, so a widget and a device chart read alike.
"""

from datetime import datetime
from typing import Any

from components.telemetry_chart import EN_DASH, SERIES_COLOURS, plot_time, time_range

# the spec's named colours (app/dashboards/spec.NAMED_COLORS), in the theme's tones
NAMED = {
    "green": "#15803d",
    "yellow": "#ca8a04",
    "orange": "#ea580c",
    "red": "#b91c1c",
    "blue": "#1d4ed8",
    "purple": "#7e22ce",
    "grey": "#64748b",
}
TEXT, GRID, AXIS = "#64748b", "#f1f5f9", "#cbd5e1"
_FONT = 'Inter, ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif'
_NUMBER = ":.6~g"
_CONFIG = {"displayModeBar": False, "responsive": True, "displaylogo": False, "staticPlot": False}


def colour(name: str | None, index: int = 0) -> str:
    """A spec colour (named or #rrggbb) as CSS; the theme's series colours when None."""
    if name is None:
        return SERIES_COLOURS[index % len(SERIES_COLOURS)]
    return NAMED.get(name, name)


def threshold_colour(value: float | None, thresholds: list[dict[str, Any]]) -> str | None:
    """The colour of the highest threshold at or below `value` (None: no threshold applies)."""
    if value is None:
        return None
    chosen = None
    for threshold in sorted(thresholds, key=lambda t: t["value"]):
        if value >= threshold["value"]:
            chosen = threshold["color"]
    return None if chosen is None else colour(chosen)


def fill_colour(value: float | None, thresholds: list[dict[str, Any]]) -> str:
    """What a bar or a dial's needle is painted: its threshold's colour, else the first series'."""
    return threshold_colour(value, thresholds) or colour(None)


def format_value(value: float | None, decimals: int | None) -> str:
    """A value as a widget shows it: `decimals` digits, or up to six significant ones."""
    if value is None:
        return EN_DASH
    if decimals is not None:
        return f"{value:,.{decimals}f}"
    return f"{value:.6g}"


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    return {
        "height": height,
        "margin": {"l": 8, "r": 12, "t": 8, "b": 8},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": _FONT, "size": 11, "color": TEXT},
        "showlegend": False,
        **extra,
    }


def _axis(**extra: Any) -> dict[str, Any]:
    return {
        "gridcolor": GRID,
        "linecolor": AXIS,
        "zeroline": False,
        "fixedrange": True,
        "automargin": True,
        **extra,
    }


def line_trace(
    label: str, times: list[datetime], values: list[float | None], line_colour: str, unit: str
) -> dict[str, Any]:
    """One series as a plotly line (gaps where a value is unknown)."""
    return {
        "type": "scatter",
        "mode": "lines",
        "name": label,
        "x": [plot_time(moment) for moment in times],
        "y": values,
        "line": {"color": line_colour, "width": 1.75},
        "connectgaps": False,
        "hovertemplate": f"{label}: %{{y{_NUMBER}}}{unit}<extra></extra>",
    }


def timeseries_figure(
    traces: list[dict[str, Any]],
    *,
    start: datetime,
    end: datetime,
    height: int,
    thresholds: list[dict[str, Any]],
    unit: str | None,
    low: float | None,
    high: float | None,
) -> dict[str, Any]:
    """Lines over [start, end] with dotted threshold lines and a legend when several."""
    shapes = [
        {
            "type": "line",
            "xref": "paper",
            "x0": 0,
            "x1": 1,
            "y0": threshold["value"],
            "y1": threshold["value"],
            "line": {"color": colour(threshold["color"]), "width": 1, "dash": "dot"},
        }
        for threshold in thresholds
    ]
    yaxis = _axis(title={"text": unit or "", "font": {"size": 11, "color": TEXT}})
    if low is not None or high is not None:
        yaxis["range"] = [low, high]
        yaxis["autorange"] = False if low is not None and high is not None else True
    empty = not any(trace["x"] for trace in traces)
    note = {"text": "No points in this range", "showarrow": False, "xref": "paper"}
    note |= {"yref": "paper", "x": 0.5, "y": 0.5, "font": {"size": 13, "color": "#94a3b8"}}
    layout = _layout(
        height,
        showlegend=len(traces) > 1,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "font": {"size": 11}},
        hovermode="x unified",
        hoverlabel={"bgcolor": "white", "bordercolor": AXIS, "font": {"color": "#0f172a"}},
        xaxis=_axis(type="date", range=time_range(start, end), hoverformat="%H:%M:%S UTC"),
        yaxis=yaxis,
        shapes=shapes,
        annotations=[note] if empty else [],
    )
    return {"data": traces, "layout": layout, "config": _CONFIG}


def sparkline_figure(
    times: list[datetime], values: list[float | None], line_colour: str, height: int
) -> dict[str, Any]:
    """A small line without axes, under a stat's value."""
    trace = line_trace("", times, values, line_colour, "") | {"hoverinfo": "skip"}
    trace.pop("hovertemplate")
    hidden = {"visible": False, "fixedrange": True}
    layout = _layout(height, margin={"l": 0, "r": 0, "t": 0, "b": 0})
    layout |= {"xaxis": hidden, "yaxis": hidden | {"rangemode": "normal"}}
    return {"data": [trace], "layout": layout, "config": _CONFIG | {"staticPlot": True}}


def _fill(css: str) -> str:
    if len(css) == 7 and css.startswith("#"):
        red, green, blue = (int(css[i : i + 2], 16) for i in (1, 3, 5))
        return f"rgba({red}, {green}, {blue}, 0.12)"
    return "rgba(29, 78, 216, 0.12)"


def gauge_figure(
    value: float | None,
    *,
    low: float,
    high: float,
    thresholds: list[dict[str, Any]],
    unit: str | None,
    decimals: int | None,
    height: int,
) -> dict[str, Any]:
    """A dial from `low` to `high`, its bands coloured by the thresholds."""
    bar_colour = fill_colour(value, thresholds)
    ordered = sorted(thresholds, key=lambda t: t["value"])
    steps = []
    for index, threshold in enumerate(ordered):
        top = ordered[index + 1]["value"] if index + 1 < len(ordered) else high
        lower, upper = max(low, threshold["value"]), min(high, top)
        if lower < upper:
            steps.append({"range": [lower, upper], "color": _fill(colour(threshold["color"]))})
    number_format = f".{decimals}f" if decimals is not None else ".4~g"
    indicator = {
        "type": "indicator",
        "mode": "gauge+number",
        "value": value,
        "number": {"suffix": f" {unit}" if unit else "", "valueformat": number_format},
        "gauge": {
            "axis": {"range": [low, high], "tickcolor": AXIS, "tickfont": {"size": 10}},
            "bar": {"color": bar_colour, "thickness": 0.35},
            "bgcolor": "#f8fafc",
            "borderwidth": 0,
            "steps": steps,
        },
    }
    layout = _layout(height, margin={"l": 36, "r": 36, "t": 16, "b": 4})
    return {"data": [indicator], "layout": layout, "config": _CONFIG | {"staticPlot": True}}


def bar_figure(
    names: list[str],
    values: list[float],
    *,
    thresholds: list[dict[str, Any]],
    unit: str | None,
    height: int,
) -> dict[str, Any]:
    """One bar per device, coloured by the thresholds."""
    colours = [fill_colour(value, thresholds) for value in values]
    suffix = f" {unit}" if unit else ""
    trace = {
        "type": "bar",
        "x": names,
        "y": values,
        "marker": {"color": colours},
        "hovertemplate": f"%{{x}}: %{{y{_NUMBER}}}{suffix}<extra></extra>",
    }
    layout = _layout(
        height,
        bargap=0.35,
        xaxis=_axis(tickangle=-30 if len(names) > 6 else 0, automargin=True),
        yaxis=_axis(title={"text": unit or "", "font": {"size": 11, "color": TEXT}}),
    )
    return {"data": [trace], "layout": layout, "config": _CONFIG}
