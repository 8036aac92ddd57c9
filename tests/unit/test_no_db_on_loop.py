"""No database session is opened on the event loop by a page or a component.

A slow query in a function that runs on the loop freezes every open tab. The rule, checked
by reading the source of pages/*.py and components/**/*.py with `ast`:

- a function that opens `db.session_scope()` must run off the loop;
- a function runs off the loop when it is a plain (sync, undecorated) function, it is used
  at least once, and each use of its name is either the first argument of `run.io_bound`,
  `run_in_threadpool` or `asyncio.to_thread`, or sits inside a function that itself runs
  off the loop (so a helper called only by an off-loop function is off the loop too);
- anything else (an `async def`, a page or refreshable, a call from an event handler, a
  callback handed to a component, a session opened at module level) runs on the loop.

Functions are matched by name across the scanned files, not by import: give off-loop
functions names that say what they load, and no two of them the same name unless both are
off the loop.
"""

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
OFFLOADERS = frozenset({"io_bound", "run_in_threadpool", "to_thread"})


@dataclass(frozen=True)
class Function:
    """A function definition, where it is and how it may run."""

    path: str
    qualname: str
    node: ast.FunctionDef | ast.AsyncFunctionDef

    @property
    def plain(self) -> bool:
        """Sync and undecorated: something we can see being called."""
        return isinstance(self.node, ast.FunctionDef) and not self.node.decorator_list


@dataclass(frozen=True)
class Use:
    """One use of a name: inside which function (None: module level), and whether offloaded."""

    scope: ast.AST | None
    offloaded: bool


def _sources() -> dict[str, ast.Module]:
    files = [*ROOT.glob("pages/*.py"), *ROOT.glob("components/**/*.py")]
    return {str(f.relative_to(ROOT)): ast.parse(f.read_text(), str(f)) for f in sorted(files)}


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _used_name(node: ast.AST) -> str | None:
    """The name a node reads (a name, an attribute, or a lambda by identity)."""
    if isinstance(node, ast.Lambda):
        return f"<lambda {id(node)}>"
    if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
        return node.id if isinstance(node, ast.Name) else node.attr
    return None


Walked = Iterator[tuple[ast.AST, ast.AST | None, str]]


def _walk(node: ast.AST, scope: ast.AST | None, qual: str) -> Walked:
    """Every node with its innermost enclosing function (or lambda) and that function's name."""
    for child in ast.iter_child_nodes(node):
        yield child, scope, qual
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            name = getattr(child, "name", "<lambda>")
            yield from _walk(child, child, f"{qual}.{name}".lstrip("."))
        elif isinstance(child, ast.ClassDef):
            yield from _walk(child, scope, f"{qual}.{child.name}".lstrip("."))
        else:
            yield from _walk(child, scope, qual)


class Survey:
    """Which functions open a session, and every use of every name."""

    def __init__(self, sources: dict[str, ast.Module]) -> None:
        """Read every module once."""
        self.functions: dict[str, list[Function]] = {}
        self.uses: dict[str, list[Use]] = {}
        self.sessions: list[tuple[str, ast.AST | None, str]] = []  # (path, scope, qualname)
        for path, module in sources.items():
            offloaded: set[int] = set()
            for node, scope, qual in _walk(module, None, ""):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{qual}.{node.name}".lstrip(".")
                    self.functions.setdefault(node.name, []).append(Function(path, name, node))
                elif isinstance(node, ast.Call):
                    if _called_name(node) in OFFLOADERS and node.args:
                        offloaded.add(id(node.args[0]))
                    if _called_name(node) == "session_scope":
                        self.sessions.append((path, scope, qual))
                name = _used_name(node)
                if name is not None:
                    self.uses.setdefault(name, []).append(Use(scope, id(node) in offloaded))
        self._verdicts: dict[str, bool] = {}

    def off_loop(self, scope: ast.AST | None) -> bool:
        """True when the function (or lambda) `scope` runs off the event loop."""
        if scope is None:
            return False
        if isinstance(scope, ast.Lambda):
            return all(use.offloaded for use in self.uses[f"<lambda {id(scope)}>"])
        return self._name_off_loop(scope.name)  # type: ignore[attr-defined]

    def _name_off_loop(self, name: str) -> bool:
        if name not in self._verdicts:
            self._verdicts[name] = False  # a cycle of calls proves nothing: on the loop
            uses = self.uses.get(name, [])
            self._verdicts[name] = (
                all(function.plain for function in self.functions[name])
                and bool(uses)
                and all(use.offloaded or self.off_loop(use.scope) for use in uses)
            )
        return self._verdicts[name]

    def on_loop(self) -> dict[str, int]:
        """Functions (path::qualname) that open sessions on the loop, with how many each."""
        found: dict[str, int] = {}
        for path, scope, qual in self.sessions:
            if not self.off_loop(scope):
                key = f"{path}::{qual or '<module>'}"
                found[key] = found.get(key, 0) + 1
        return found


def test_pages_and_components_open_no_session_on_the_event_loop() -> None:
    on_loop = Survey(_sources()).on_loop()
    assert sorted(on_loop) == [], "sessions opened on the event loop (use run.io_bound)"


def test_the_rule_catches_a_session_in_an_event_handler() -> None:
    source = """
def _count():
    with db.session_scope() as session:
        return 1

def _total():
    with db.session_scope() as session:
        return 2

async def shown():
    return await run.io_bound(_count)

def clicked():
    return _total()
"""
    on_loop = Survey({"pages/example.py": ast.parse(source)}).on_loop()
    assert on_loop == {"pages/example.py::_total": 1}
