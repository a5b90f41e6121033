"""The shape of the code: no function in src/ longer than a reader can hold in their head (80 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "emfm"
MAX_LINES = 80


def function_lengths(root: Path = SRC) -> list[tuple[int, str]]:
    """(lines, "path:function") for every function and method, decorators excluded, longest first."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                out.append((lines, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def test_no_function_is_longer_than_80_lines():
    too_long = [f"{where} ({n} lines)" for n, where in function_lengths() if n > MAX_LINES]
    assert not too_long, "split these into named steps: " + "; ".join(too_long)


def test_the_measure_counts_a_long_function(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * 90 + "\ndef g():\n    return 1\n")
    lengths = function_lengths(tmp_path)
    assert lengths[0][0] == 91 and lengths[0][1].endswith(" f") and lengths[1][0] == 2


if __name__ == "__main__":
    for n, where in function_lengths()[:10]:
        print(f"{n:4d}  {where}")
