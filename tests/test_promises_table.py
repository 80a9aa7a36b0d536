"""tests/PROMISES.md names only tests that exist, and in its CI column (`make test`) only tests that
`make test` runs — none marked ``@pytest.mark.slow``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tests(file: Path) -> dict[str, bool]:
    """Test function name → marked slow (the function or its module)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    module_slow = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                      and "slow" in ast.unparse(n.value) for n in tree.body)
    return {n.name: module_slow or any("mark.slow" in ast.unparse(d) for d in n.decorator_list)
            for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")}


def _references(cell: str) -> list[tuple[str, str | None]]:
    """(file, test or None) for every `file.py`, `file.py::test` and `::test` (of the last file) in a cell."""
    refs: list[tuple[str, str | None]] = []
    last = None
    for m in re.finditer(r"`(test_\w+\.py)?(?:::(\w+))?", cell):
        file, name = m.group(1), m.group(2)
        if file is None and name is None:
            continue
        last = file or last
        if last is not None:
            refs.append((last, name))
    return refs


def test_promises_name_existing_tests_and_ci_names_no_slow_test() -> None:
    rows = [ln for ln in (ROOT / "tests" / "PROMISES.md").read_text(encoding="utf-8").splitlines()
            if ln.startswith("| ") and not ln.startswith("| README") and not ln.startswith("|---")]
    assert len(rows) > 20
    problems = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for col, cell in ((1, cells[1]), (2, cells[2] if len(cells) > 2 else "")):
            for file, name in _references(cell):
                path = ROOT / "tests" / file
                if not path.is_file():
                    problems.append(f"{file} does not exist")
                    continue
                tests = _tests(path)
                if name is not None and name not in tests:
                    problems.append(f"{file}::{name} does not exist")
                elif col == 1 and name is not None and tests[name]:
                    problems.append(f"{file}::{name} is slow, listed under make test")
    assert not problems, problems
