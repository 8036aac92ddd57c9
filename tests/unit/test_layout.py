"""The layers of docs/architecture.md hold, read from the imports with `ast`.

- pages, components and GraphQL call services: they import no worker (`app.workers`), no
  MQTT client and no simulator;
- services import no page, component, GraphQL, worker or NiceGUI; the one exception is the
  System page's service, which reads the evaluators' leases (`app.workers.leases`: the
  roster of who owns which partition) to show them;
- `rules/` imports nothing of the app;
- SQL is written in services only (and core, which sets storage up): nothing else imports
  the query builders of SQLModel or SQLAlchemy;
- paho's clients are driven by `app/mqtt/` only: `link.py` (a network thread per client,
  `loop_start`/`loop_stop`) and `selector_loop.py` (many clients on one thread,
  `loop_read`/`loop_write`/`loop_misc`).
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _files(*patterns: str) -> list[Path]:
    return sorted(path for pattern in patterns for path in ROOT.glob(pattern))


# `from app.workers import leases` names both the package and the module
ALLOWED = {("app/services/system.py", name) for name in ("app.workers", "app.workers.leases")}


def _offending(patterns: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{relative} imports {name}"
        for path in _files(*patterns)
        for name in _imports(path)
        if name.startswith(forbidden)
        and (relative := str(path.relative_to(ROOT)), name) not in ALLOWED
    ]


@pytest.mark.parametrize(
    ("patterns", "forbidden"),
    [
        (
            ("pages/*.py", "components/**/*.py", "app/graphql/*.py"),
            ("app.workers", "app.sim", "app.mqtt.ingest", "app.mqtt.link", "paho"),
        ),
        (
            ("app/services/*.py",),
            ("pages", "components", "app.graphql", "app.workers", "nicegui", "strawberry"),
        ),
        (("rules/**/*.py",), ("app", "pages", "components", "sqlmodel", "nicegui")),
        (
            (
                "pages/*.py",
                "components/**/*.py",
                "app/graphql/*.py",
                "app/workers/*.py",
                "app/mqtt/*.py",
                "app/sim/*.py",
                "app/web/*.py",
            ),
            tuple(
                f"{library}.{name}"
                for library in ("sqlmodel", "sqlalchemy")
                for name in ("select", "col", "func", "text", "insert", "update", "delete")
            ),
        ),
    ],
    ids=["edges-call-services", "services-know-no-edge", "rules-pure", "sql-in-services"],
)
def test_layers_import_only_downwards(patterns: tuple[str, ...], forbidden: tuple[str, ...]):
    assert _offending(patterns, forbidden) == []


def test_only_app_mqtt_drives_paho_clients():
    runs_threads = [
        str(path.relative_to(ROOT))
        for path in _files("app/**/*.py")
        if any(
            isinstance(node, ast.Attribute)
            and node.attr in {"loop_start", "loop_stop", "loop_read", "loop_write", "loop_misc"}
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert runs_threads == ["app/mqtt/link.py", "app/mqtt/selector_loop.py"]


def test_the_check_sees_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    page = tmp_path / "pages" / "bad.py"
    page.parent.mkdir()
    page.write_text("from app.workers.command_dispatch import CommandDispatcher\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert _offending(("pages/*.py",), ("app.workers",)) == [
        "pages/bad.py imports app.workers.command_dispatch",
        "pages/bad.py imports app.workers.command_dispatch.CommandDispatcher",
    ]
