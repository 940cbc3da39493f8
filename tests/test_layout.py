"""Small units hold (STYLE.md, principle 7): modules in tune/ under 400 lines, functions
under 60 anywhere but tests and benchmarks."""

from __future__ import annotations

import ast

from tests.support.paths import ROOT

PACKAGES = ("lightning_modules", "tune", "service", "deploy")
MAX_FUNCTION_LINES = 60
MAX_TUNE_MODULE_LINES = 400


def _sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_function_is_over_60_lines():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, long


def test_no_module_in_tune_is_over_400_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "tune").glob("*.py")}
    assert len(sizes) > 20  # the folder was read
    assert not {k: v for k, v in sizes.items() if v > MAX_TUNE_MODULE_LINES}, sizes
