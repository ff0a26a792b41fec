"""The import graph points one way, down: each package imports only the floors below it.

Floors, bottom up (a package may import its own floor and those below)::

    core <- retrieval <- evaluation <- ranking <- online_learning <- simulation
         <- serving <- api <- shoprank (the CLI)

``feature_repo/`` is Feast's repo: it imports none of ours. Every import counts,
the ones inside functions too. Modules must also form no import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["core", "retrieval", "evaluation", "ranking", "online_learning", "simulation", "serving", "api",
          "shoprank"]
OURS = {*FLOORS, "feature_repo", "benchmarks", "tests", "notebooks"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of our packages in ``path``."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, node.module] if node.module else base)
            # `from pkg import mod` imports pkg.mod when mod is a module
            names = [f"{stem}.{a.name}" if (ROOT / stem.replace(".", "/") / f"{a.name}.py").is_file() else stem
                     for a in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in OURS]
    return found


def sources(packages: list[str]) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def upward_imports(root: Path = ROOT) -> list[str]:
    errors = []
    for path in sources([*FLOORS, "feature_repo"]):
        top = path.relative_to(root).parts[0]
        allowed = set(FLOORS[: FLOORS.index(top) + 1]) if top in FLOORS else {"feature_repo"}
        for line, name in imports_of(path):
            if name.split(".")[0] not in allowed:
                errors.append(f"{path.relative_to(root)}:{line} ({top}) imports {name}")
    return errors


def cycles() -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources(FLOORS):
        graph[module_name(path)] = {name for _, name in imports_of(path)}
    known = set(graph)
    for module, targets in graph.items():
        graph[module] = {t for t in targets if t in known and t != module}
    found, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    return found


def test_no_package_imports_a_floor_above_it() -> None:
    assert upward_imports() == []


def test_modules_form_no_import_cycle() -> None:
    assert cycles() == []


def test_the_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check fails on a planted upward import (so it can fail at all)."""
    planted = ROOT / "core" / "_planted_upward_import.py"
    planted.write_text("from serving.engine import SearchEngine\n")
    try:
        assert upward_imports() == ["core/_planted_upward_import.py:1 (core) imports serving.engine"]
    finally:
        planted.unlink()
