"""The code's shape, checked by parsing it (nothing is imported): module sizes, what the store may
import, no import cycles, one name per class. See ../shared/STYLE.md ("One owner for each rule")."""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "trainer_agent")
MAX_LINES = 600
# The web layer, which the store must not know: it answers in plain dataclasses and rows.
WEB_LAYER = ("fastapi", "starlette", "server.schemas", "server.routes")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES (a package is its __init__.py)."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imported_names(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module name an import statement of the file names (top level, in functions, under
    TYPE_CHECKING alike), with its line; `from a import b` names `a.b` when that is one of MODULES,
    else `a`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield (submodule if submodule in MODULES else source), node.lineno


def _resolve(name: str) -> str | None:
    """The module of MODULES that an imported name refers to (the longest known prefix), if any."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return None


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        graph[module]  # every module is a node, importing something or not
        for name, _ in _imported_names(module, path):
            target = _resolve(name)
            # A package's own __init__ is not an edge: importing server.store.sql runs server/store/__init__.py,
            # but that does not make the two depend on each other.
            if target is not None and target != module and not module.startswith(f"{target}."):
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_is_longer_than_one_head_holds() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by concern (at most {MAX_LINES} lines a module)"


def test_the_store_does_not_know_the_web_layer() -> None:
    store = {m: p for m, p in MODULES.items() if m == "server.store" or m.startswith("server.store.")}
    assert "server.store.sql" in store  # the check below looks at the package itself
    found = [
        f"{p.relative_to(ROOT)}:{line} imports {name}"
        for m, p in store.items()
        for name, line in _imported_names(m, p)
        if any(name == w or name.startswith(f"{w}.") for w in WEB_LAYER)
    ]
    assert found == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert _cycles(_import_graph()) == []


def test_one_name_per_class() -> None:
    """Two classes with one name in product code read as one thing in a traceback or a review."""
    where: dict[str, list[str]] = defaultdict(list)
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert {name: places for name, places in where.items() if len(places) > 1} == {}
