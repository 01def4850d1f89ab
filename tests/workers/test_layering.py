"""The import directions between our packages (docs/ARCHITECTURE.md, "Import directions"),
lazy imports included, and no import cycle between our modules.

========== ===================================================================
package    may import (of ours)
========== ===================================================================
common     nothing
pose_core  nothing
model_store pose_core
workers    common, model_store, pose_core
app        common, model_store, pose_core; workers only inside functions
           (the CLI's ``worker`` / ``eval`` commands, the API's Celery producer)
========== ===================================================================

Imports under ``if TYPE_CHECKING:`` are not imports at run time and are not counted."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from service_support import REPO_ROOT

PACKAGES = ("app", "common", "workers", "model_store", "pose_core")
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "pose_core": set(),
    "model_store": {"pose_core"},
    "workers": {"common", "model_store", "pose_core"},
    "app": {"common", "model_store", "pose_core", "workers"},
}
LAZY_ONLY = {("app", "workers")}  #: allowed inside functions only, never at module level
#: third-party roots a package must not load (lazily either)
FORBIDDEN_THIRD_PARTY = {
    "common": {"torch", "celery", "fastapi", "starlette", "numpy", "onnxruntime", "sqlalchemy"},
    "pose_core": {"celery", "fastapi", "starlette", "sqlalchemy"},
    "model_store": {"celery", "fastapi", "starlette"},
    "workers": {"fastapi", "starlette"},
}

WORKER_PROBE = """
import importlib, json, pkgutil, sys
import workers.celery_app, workers.tasks, workers.version_pipeline
for info in pkgutil.iter_modules(workers.tasks.__path__, "workers.tasks."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""
API_PROBE = """
import json, sys
import app.main, celery
app.main.create_app()
print(json.dumps({"modules": sorted(sys.modules),
                  "celery_apps": len(list(celery._state._get_active_apps()))}))
"""
COMMON_PROBE = """
import importlib, json, pkgutil, sys
import common
for info in pkgutil.iter_modules(common.__path__, "common."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported name, line, at module level) of every run-time import in ``path``; a
    ``from a import b`` yields ``a`` and ``a.b``; relative imports are resolved."""

    def visit(node: ast.AST, top: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (x for n in child.orelse for x in visit_one(n, top))
                continue
            yield from visit_one(child, top)

    def visit_one(node: ast.AST, top: bool) -> Iterator[tuple[str, int, bool]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                package = package if path.name == "__init__.py" else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            yield base, node.lineno, top
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno, top
        inner = top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from visit(node, inner)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), True)


def _edges() -> dict[str, dict[str, tuple[int, bool]]]:
    """module -> {our imported module: (first line, any import at module level)}."""
    modules = _modules()
    edges: dict[str, dict[str, tuple[int, bool]]] = {}
    for module, path in modules.items():
        found: dict[str, tuple[int, bool]] = {}
        for name, line, top in _imports(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                old = found.get(name)
                found[name] = (old[0] if old else line, top or bool(old and old[1]))
        edges[module] = found
    return edges


def test_packages_import_only_in_the_allowed_directions() -> None:
    offenders = []
    for module, imported in _edges().items():
        root = module.split(".")[0]
        for target, (line, top) in imported.items():
            other = target.split(".")[0]
            if other == root:
                continue
            if other not in ALLOWED[root] or (top and (root, other) in LAZY_ONLY):
                offenders.append(f"{module}:{line} -> {target}{' (module level)' if top else ''}")
    assert offenders == []


def test_no_package_imports_forbidden_libraries_even_lazily() -> None:
    offenders = []
    for module, path in _modules().items():
        forbidden = FORBIDDEN_THIRD_PARTY.get(module.split(".")[0], set())
        for name, line, _ in _imports(module, path):
            if name.split(".")[0] in forbidden:
                offenders.append(f"{module}:{line} {name}")
    assert offenders == []


def test_no_import_cycles_between_our_modules() -> None:
    """Tarjan's strongly connected components of the import graph (lazy imports included)."""
    edges = {m: set(targets) for m, targets in _edges().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            connect(node)
    assert cycles == []


def _probe(code: str) -> object:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_worker_side_loads_no_api_module() -> None:
    loaded = _probe(WORKER_PROBE)
    assert isinstance(loaded, list)
    assert "workers.tasks.evaluate" in loaded and "workers.tasks.compress" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("app", "fastapi", "starlette")] == []


def test_the_api_loads_no_worker_module_and_builds_no_celery_app_at_import() -> None:
    loaded = _probe(API_PROBE)
    assert isinstance(loaded, dict)
    assert [m for m in loaded["modules"] if m.split(".")[0] == "workers"] == []
    assert loaded["celery_apps"] == 0


def test_common_loads_neither_torch_nor_celery() -> None:
    loaded = _probe(COMMON_PROBE)
    assert isinstance(loaded, list)
    roots = {m.split(".")[0] for m in loaded}
    assert roots.isdisjoint(FORBIDDEN_THIRD_PARTY["common"] | {"app", "workers", "pose_core"})
