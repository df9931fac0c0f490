"""The house keeps its shape: no import cycle anywhere (deferred imports and the CLI included),
the library never imports the CLI, and an import inside a function says why it is there.

import-linter (``make lint``) checks the floors of ``pyproject.toml``; it only sees the
``gapkit`` folder, so the CLI (installed from ``cli/`` as ``gapkit.cli``) is checked here."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"gapkit": ROOT / "gapkit", "gapkit.cli": ROOT / "cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The gapkit module an import of ``name`` loads (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, list[str]]]:
    """Each import statement with the gapkit modules it names."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found = [m for m in map(_resolve, (n for n in names if n.split(".")[0] == "gapkit")) if m]
        out.append((node, found))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = graph.setdefault(name, set())
        for _, found in _imports(ast.parse(path.read_text())):
            deps.update(m for m in found if m != name)
    return graph


def _deferred(path: Path) -> list[tuple[int, str]]:
    """Imports inside a function or class body (not module level, not under a module-level
    ``if``/``try``) whose line, or the comment line above, does not say why."""
    text = path.read_text()
    tree, lines = ast.parse(text), text.splitlines()
    top = {id(n) for n in tree.body}
    for stmt in tree.body:
        if isinstance(stmt, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(stmt)}
    silent = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
            line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            if "#" not in line and not above.startswith("#"):
                silent.append((node.lineno, line.strip()))
    return silent


def test_the_scan_sees_the_house():
    # A scan that found nothing would pass every check below.
    assert {"gapkit.faceset", "gapkit.adapt.adapter", "gapkit.refine.cnn", "gapkit.bench.cell",
            "gapkit.cli.main"} <= MODULES.keys()
    graph = _graph()
    assert "gapkit.faceset" in graph["gapkit.bench.runner"]
    assert "gapkit.refine" in graph["gapkit.adapt.adapter"]


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """An import cycle of ``graph`` (module -> the modules it imports), or [] when there is none."""
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        return list(exc.args[1])
    return []


def test_no_import_cycle_anywhere():
    assert _cycle(_graph()) == []


def test_a_cycle_through_a_deferred_import_would_be_found(tmp_path, monkeypatch):
    # Two modules importing each other, one of them inside a function, as cascade and refine did.
    (tmp_path / "a.py").write_text("import gapkit.b\n")
    (tmp_path / "b.py").write_text("def f():\n    import gapkit.a  # deferred\n")
    monkeypatch.setitem(globals(), "MODULES", {"gapkit.a": tmp_path / "a.py", "gapkit.b": tmp_path / "b.py"})
    assert sorted(set(_cycle(_graph()))) == ["gapkit.a", "gapkit.b"]


def test_the_library_never_imports_the_cli():
    up = {m: sorted(d for d in deps if d.startswith("gapkit.cli"))
          for m, deps in _graph().items() if not m.startswith("gapkit.cli")}
    assert {m: d for m, d in up.items() if d} == {}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("gapkit.cli")))
def test_library_imports_sit_at_the_top_unless_a_comment_says_why(module):
    # The CLI may defer heavy imports to keep --help fast; the library says why it defers one.
    assert _deferred(MODULES[module]) == []
