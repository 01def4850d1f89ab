"""Workers never import FastAPI nor the API's code (ARCHITECTURE.md, import direction).

Only ``app.settings`` (the shared settings, and the embedded-Redis socket path it names) may
be loaded by the worker side."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import workers

WORKERS_DIR = Path(workers.__file__).parent
ALLOWED_APP_MODULES = {"app", "app.settings", "app.embedded", "app.embedded.redis_server"}
FORBIDDEN_ROOTS = ("fastapi", "starlette", "app")

PROBE = """
import importlib, json, pkgutil, sys
import workers.celery_app, workers.tasks, workers.version_pipeline
for info in pkgutil.iter_modules(workers.tasks.__path__, "workers.tasks."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _is_forbidden(module: str) -> bool:
    root = module.split(".")[0]
    return root in FORBIDDEN_ROOTS and module not in ALLOWED_APP_MODULES


def test_importing_the_worker_side_loads_no_api_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "workers.tasks.evaluate" in loaded and "workers.tasks.compress" in loaded
    assert [m for m in loaded if _is_forbidden(m)] == []


def test_no_worker_module_imports_api_code_even_lazily() -> None:
    offenders = []
    for path in sorted(WORKERS_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if _is_forbidden(n)]
    assert offenders == []
