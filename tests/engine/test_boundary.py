"""The engine boundary: outside `engine/` and `backend/`, no module imports the engine or its
scheduler; services reach them only through the `EngineWorker` and typed operations."""

from __future__ import annotations

import ast
from pathlib import Path

import frontier_signal

PACKAGE = Path(frontier_signal.__file__).parent
FORBIDDEN_MODULES = {"frontier_signal.engine.engine", "frontier_signal.engine.scheduler"}
FORBIDDEN_NAMES = {"Engine", "Scheduler"}


def imports_of(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every import in a file, `name` "" for `import module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
            if node.module == "frontier_signal.engine":
                found += [(f"frontier_signal.engine.{alias.name}", "") for alias in node.names]
    return found


def test_nothing_outside_engine_and_backend_imports_the_engine_or_the_scheduler():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        inside = path.relative_to(PACKAGE).parts[0]
        if inside in ("engine", "backend"):
            continue
        for module, name in imports_of(path):
            if module in FORBIDDEN_MODULES or (
                module.startswith("frontier_signal.engine") and name in FORBIDDEN_NAMES
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}: {module} {name}".strip())
    assert not offenders, offenders


def test_the_scan_sees_an_engine_import(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("from frontier_signal.engine.engine import Engine\n")
    assert ("frontier_signal.engine.engine", "Engine") in imports_of(sample)
