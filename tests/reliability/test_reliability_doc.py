"""docs/reliability.md stays true: every table row names tests, and every test it names exists."""

from __future__ import annotations

import ast
import re

from tests.reliability.conftest import REPO

DOC = REPO / "docs" / "reliability.md"
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?[^`]*`")


def _test_functions(path: str) -> set[str]:
    module = ast.parse((REPO / path).read_text())
    return {
        node.name
        for node in ast.walk(module)
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and node.name.startswith(("test_", "Fake"))
    }


def test_every_row_names_tests_that_exist():
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ")]
    rows = [row for row in rows if not row.startswith(("| Fault |", "| Input |", "| Concern |"))]
    assert len(rows) >= 25
    for row in rows:
        last_cell = row.rstrip(" |").rsplit(" | ", 1)[-1]
        current = None
        named = 0
        for match in _REFERENCE.finditer(last_cell):
            path, name = match.groups()
            current = path or current
            if name is None:
                continue
            assert current, f"{name} has no file in: {row}"
            assert name in _test_functions(current), f"{current}::{name} does not exist"
            named += 1
        assert named or "tests/" in last_cell, f"row names no test: {row}"
