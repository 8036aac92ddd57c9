"""The low-code dashboards' parts: the grid, the widget views, the editor."""
