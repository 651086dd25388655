"""The search engine's modules import each other without cycles (lazy and type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import diffsearch

SEARCH = Path(diffsearch.__file__).parent / "search"


def search_imports(path: Path) -> set[str]:
    """Every ``diffsearch.search.*`` module that ``path`` imports anywhere (functions and TYPE_CHECKING blocks too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffsearch.search."):
            names.add(node.module.removeprefix("diffsearch.search."))
    return names


def test_no_import_cycles_in_the_search_engine():
    graph = {path.stem: search_imports(path) for path in SEARCH.glob("*.py")}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for name in graph.get(start, ()):
            if name == target or (name not in seen and reaches(name, target, seen | {name})):
                return True
        return False

    assert sorted(name for name in graph if reaches(name, name, set())) == []


def test_storage_does_not_import_the_strategies():
    assert "strategies" not in search_imports(SEARCH / "storage.py")
