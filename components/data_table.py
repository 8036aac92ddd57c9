"""A plain, aligned HTML table styled like the rest of the product."""

from collections.abc import Iterator
from contextlib import contextmanager

from nicegui import ui


@contextmanager
def data_table(headers: list[str], *, align_right: frozenset[int] = frozenset()) -> Iterator[None]:
    """A table with a header row; rows go inside the block (see `row` and `cell`)."""
    with ui.element("div").classes("w-full overflow-x-auto"):
        with ui.element("table").classes("iotdeck-table"):
            with ui.element("thead"), ui.element("tr"):
                for index, header in enumerate(headers):
                    th = ui.element("th")
                    if index in align_right:
                        th.style("text-align: right")
                    with th:
                        ui.label(header)
            with ui.element("tbody"):
                yield


def row() -> ui.element:
    """A body row; enter it and add one `cell()` per header."""
    return ui.element("tr")


def cell(*, right: bool = False, classes: str = "") -> ui.element:
    """A body cell; enter it to put content in."""
    td = ui.element("td").classes(classes)
    if right:
        td.style("text-align: right")
    return td
