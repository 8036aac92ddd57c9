"""The editor's grid rules: drops and resizes never overlap, new widgets find a free spot."""

from app.dashboards.layout import clamp, free_spot, new_id, place
from app.dashboards.spec import parse_spec


def _widget(widget_id: str, x: int, y: int, w: int, h: int) -> dict:
    return {"id": widget_id, "type": "markdown", "x": x, "y": y, "w": w, "h": h}


def _overlaps(widgets: list[dict]) -> bool:
    spec = {"version": 1, "name": "grid", "widgets": widgets}
    try:
        parse_spec(spec)
    except Exception:
        return True
    return False


def test_a_dropped_widget_pushes_down_what_it_lands_on_and_no_further() -> None:
    widgets = [_widget("a", 0, 0, 6, 2), _widget("b", 6, 0, 6, 2), _widget("c", 0, 2, 12, 3)]
    placed = {w["id"]: w for w in place(widgets, "b", (0, 0, 6, 2))}
    assert (placed["b"]["x"], placed["b"]["y"]) == (0, 0)
    assert placed["a"]["y"] == 2  # under b
    assert placed["c"]["y"] == 4  # under a, which moved onto it
    assert not _overlaps(list(placed.values()))
    assert widgets[0]["y"] == 0, "the input is left as it was (undo keeps it)"


def test_a_resize_is_clamped_to_the_grid_and_pushes_neighbours_down() -> None:
    widgets = [_widget("a", 0, 0, 4, 2), _widget("b", 4, 0, 4, 2)]
    placed = {w["id"]: w for w in place(widgets, "a", (0, 0, 20, 3))}
    assert (placed["a"]["w"], placed["a"]["h"]) == (12, 3)
    assert placed["b"]["y"] == 3
    assert not _overlaps(list(placed.values()))


def test_clamp_keeps_a_rectangle_inside_the_twelve_columns() -> None:
    assert clamp(11, -2, 4, 0) == (8, 0, 4, 1)
    assert clamp(-3, 5, 0, 200) == (0, 5, 1, 100)


def test_a_new_widget_goes_to_the_first_free_spot_in_reading_order() -> None:
    widgets = [_widget("a", 0, 0, 6, 2), _widget("b", 6, 0, 3, 2)]
    assert free_spot(widgets, 3, 2) == (9, 0)
    assert free_spot(widgets, 6, 2) == (0, 2)
    assert free_spot([], 12, 4) == (0, 0)


def test_new_ids_are_unused_and_valid() -> None:
    widgets = [_widget("stat-1", 0, 0, 1, 1), _widget("stat-2", 1, 0, 1, 1)]
    assert new_id(widgets, "stat") == "stat-3"
    assert new_id([], "device_table") == "device_table-1"
