"""Form helpers: put a service's ValidationError on the field it names."""

from nicegui import ui
from nicegui.elements.mixins.validation_element import ValidationElement

from app.core.errors import ValidationError


def clear_errors(fields: dict[str, ValidationElement]) -> None:
    """Remove every error message from the form's fields."""
    for field in fields.values():
        field.error = None


def show_error(fields: dict[str, ValidationElement], error: ValidationError) -> None:
    """Show the error under its field, or as a notification when no field matches."""
    field = fields.get(error.field)
    if field is None:
        ui.notify(f"{error.field}: {error.reason}", type="negative")
        return
    field.error = f"{error.field.capitalize()} {error.reason}"
