"""The house rule on size, kept true: no file in hoshikage/ over 400 lines, no function over 60.

A function's length runs from its ``def`` line to its last line, nested functions included (a
function that defines routes or callbacks inside carries them). Run as a script to list every
offender: ``python tests/test_code_shape.py``.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hoshikage"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def long_files() -> list[str]:
    """'path: N lines' for each module over MAX_FILE_LINES."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_FILE_LINES:
            out.append(f"{path.relative_to(PACKAGE.parent)}: {n} lines")
    return out


def long_functions() -> list[str]:
    """'path:line name: N lines' for each function or method over MAX_FUNCTION_LINES."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {n} lines")
    return out


def test_no_file_is_over_400_lines():
    assert long_files() == []


def test_no_function_is_over_60_lines():
    assert long_functions() == []


if __name__ == "__main__":
    offenders = long_files() + long_functions()
    print("\n".join(offenders) or "none")
    sys.exit(1 if offenders else 0)
