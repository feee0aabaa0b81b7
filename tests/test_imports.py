"""How verge's own modules import each other: no circles, and no torch in the web UI.

The import graph is read with ``ast`` from the source (no third-party tool, nothing imported):
every ``import`` and ``from ... import`` of the product packages, the ones inside functions
included (an import moved into a function to dodge a circle is still a circle: the two modules
still need each other). Imports under ``if TYPE_CHECKING:`` never run and are left out.

Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so the importer also
depends on those packages -- unless it is inside them (a package's own modules run after its
``__init__`` has started, which is how a package imports its submodules without a circle).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("verge", "webui", "workers", "store", "models", "migrations")  # pyproject's packages



def product_modules(root: Path, packages=PACKAGES) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported_modules(name: str, path: Path, is_package: bool, known) -> set[str]:
    """The product modules ``name`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = _type_checking_only(tree)
    package = name if is_package else name.rpartition(".")[0]
    targets = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..a import b
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            # `from a import b` imports the module a.b when there is one, else a name of a
            targets += [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                        for alias in node.names]
    out = set()
    for target in targets:
        while target and target not in known:  # a name inside a module: the module
            target = target.rpartition(".")[0]
        if not target or target == name:
            continue
        out.add(target)
        out.update(a for a in _ancestors(target) if a in known and a not in _ancestors(name) and a != name)
    return out


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    modules = product_modules(root, packages)
    return {name: imported_modules(name, path, is_package, modules)
            for name, (path, is_package) in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per group of modules that import each other (a strongly connected component,
    Tarjan's algorithm, iterative), as a path ``[a, b, ..., a]``."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1 or node in graph.get(node, ()):
                        groups.append(group)
    return [_circle_in(graph, group) for group in groups]


def _circle_in(graph, group: set[str]) -> list[str]:
    """A shortest circle through the group's first module (breadth-first within the group)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"no circle in {group}")  # pragma: no cover - a component always has one


# --------------------------------------------------------------------------- the checker itself
def test_the_checker_finds_a_circle_and_passes_a_tree():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    two = find_cycles({"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"z"}, "z": {"x"}})
    assert sorted(two) == [["a", "b", "a"], ["x", "y", "z", "x"]]


def test_the_checker_reads_function_level_relative_and_package_imports(tmp_path):
    def write(rel, text):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    # the old shape of verge/cli.py <-> webui/cli.py: one side imports the other in a function
    write("app/__init__.py", "")
    write("app/cli.py", "import click\nfrom web.cli import register\n")
    write("web/__init__.py", "")
    write("web/cli.py", "def run():\n    from app import cli\n    return cli\n")
    # a helper module inside a package whose __init__ imports the importer: a circle too
    write("kit/__init__.py", "from other import mod\n")
    write("kit/helpers.py", "X = 1\n")
    write("other/__init__.py", "")
    write("other/mod.py", "from kit.helpers import X\n")
    # a package importing its own submodules, relatively, and TYPE_CHECKING imports: no circle
    write("fine/__init__.py", "from . import a\nfrom .b import thing\n")
    write("fine/a.py", "from .b import thing\nfrom typing import TYPE_CHECKING\n"
                       "if TYPE_CHECKING:\n    from fine import a\n")
    write("fine/b.py", "thing = 1\nif TYPE_CHECKING:\n    from . import a\n")

    graph = import_graph(tmp_path, ("app", "web", "kit", "other", "fine"))
    assert graph["app.cli"] == {"web", "web.cli"}
    assert graph["web.cli"] == {"app", "app.cli"}
    assert graph["other.mod"] == {"kit", "kit.helpers"}
    assert graph["fine"] == {"fine.a", "fine.b"} and graph["fine.a"] == {"fine.b"}
    assert graph["fine.b"] == set()
    assert sorted(find_cycles(graph)) == [["app.cli", "web.cli", "app.cli"],
                                          ["kit", "other.mod", "kit"]]


# --------------------------------------------------------------------------- verge itself
def test_no_import_circles_between_verge_modules():
    graph = import_graph()
    assert {"verge.cli", "verge.clikit", "webui.cli", "workers.app", "store.db"} <= set(graph)
    circles = find_cycles(graph)
    assert not circles, "import circles:\n" + "\n".join("  " + " -> ".join(c) for c in circles)


def test_the_cli_package_is_assembled_in_one_place():
    """The command modules and webui/cli.py are added by verge/cli/__init__.py; none of them
    imports the package (or another command module) back."""
    graph = import_graph()
    commands = {m for m in graph if m.startswith("verge.cli.")} | {"webui.cli"}
    assert graph["verge.cli"] >= commands
    for module in commands | {"verge.clikit", "verge.demo", "verge.supervisor", "verge.batchstatus"}:
        assert not (graph[module] & (commands | {"verge.cli"})), module


def test_webui_does_not_import_torch(tmp_path):
    """The web UI (every page, the admin's included) runs in gunicorn processes that have no use
    for torch or open_clip: creating the app loads neither."""
    code = ("import sys, webui\n"
            "webui.create_app()\n"
            "loaded = sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    env = {**os.environ, "VERGE_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
