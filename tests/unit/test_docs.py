"""The README documents every setting the application reads."""

from pathlib import Path

from app.core.config import Settings

README = Path(__file__).parents[2] / "README.md"


def test_every_setting_has_a_row_in_the_readme() -> None:
    text = README.read_text()
    missing = [
        f"IOTDECK_{name.upper()}"
        for name in Settings.model_fields
        if f"`IOTDECK_{name.upper()}`" not in text
    ]
    assert missing == []
