"""Who may import whom: deploy/ may import every part; the parts never import deploy/, and the hospital's
node and the consortium's coordinator never import each other (each side ships and runs on its own)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"node": {"coordinator", "deploy"}, "coordinator": {"node", "deploy"},
             "contracts": {"node", "coordinator", "deploy"}, "federation": {"node", "coordinator", "deploy"}}


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_part_imports_neither_deploy_nor_the_other_side(package):
    wrong = {str(path.relative_to(ROOT)): sorted(_imported_packages(path) & FORBIDDEN[package])
             for path in (ROOT / package).rglob("*.py")}
    assert {path: names for path, names in wrong.items() if names} == {}


def test_no_module_outside_tests_is_over_400_lines_and_deploy_stays_under_1000():
    shipped = [path for package in (*FORBIDDEN, "deploy", "benchmarks") for path in (ROOT / package).rglob("*.py")]
    lines = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in shipped}
    assert {path: count for path, count in lines.items() if count > 400} == {}
    assert sum(count for path, count in lines.items() if path.startswith("deploy/")) < 1000
