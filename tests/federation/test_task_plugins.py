"""Issue 17: a condition is one plug-in folder. Each task declares its data path (federation/tasks/data_path.py);
the node's importer, the portal, the operator console and the study runner read it from the registry
(federation.tasks.TASKS), so the registration line is the only place outside a task's package that names it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from federation.tasks import TASKS
from federation.tasks.data_path import SHARED_DATA_CATEGORIES, data_categories

ROOT = Path(__file__).resolve().parents[2]
TASKS_DIR = ROOT / "federation" / "tasks"
# The modules that serve every task: they may reach tasks only through the registry.
GENERIC = ["node/records/registry.py", "node/records/kinds.py", "node/portal/studies.py", "node/service.py",
           "node/client_app.py", "coordinator", "deploy/demo.py", "federation/tasks/base.py",
           "federation/tasks/data_path.py"]


def _task_packages() -> list[str]:
    return sorted(p.name for p in TASKS_DIR.iterdir() if (p / "__init__.py").exists())


def _files(entry: str) -> list[Path]:
    path = ROOT / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def test_every_task_is_a_package_registered_once():
    packages = _task_packages()
    assert len(packages) == len(TASKS)
    registration = (TASKS_DIR / "__init__.py").read_text().splitlines()
    for package in packages:
        lines = [line for line in registration if re.search(rf"\bfederation\.tasks\.{package}\b", line)]
        assert lines == [f'    "federation.tasks.{package}",'], package


@pytest.mark.parametrize("entry", GENERIC)
def test_generic_modules_name_no_task(entry):
    named = []
    for path in _files(entry):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            for name in [module or "", *names]:
                if any(name.startswith(f"federation.tasks.{p}") for p in _task_packages()):
                    named.append(f"{path.relative_to(ROOT)}: {name}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in TASKS:
                named.append(f"{path.relative_to(ROOT)}: {node.value!r}")
    # The demo is, by definition, the study run of the heart-disease task's demo data: it names it once.
    allowed = ["deploy/demo.py: 'heart-disease/v1'"] if entry == "deploy/demo.py" else []
    assert named == allowed


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_every_task_declares_its_data_path(task_id):
    task = TASKS[task_id]
    assert task.description and task.data_read, "the portal shows both before consent"
    assert {r.format for r in task.readers} >= {"csv"}
    assert task.data_categories and set(task.data_categories.items()) <= set(data_categories(TASKS.values()).items())
    assert task.aggregation_weight and task.training_weight([]) == 0


def test_the_console_offers_the_shared_categories_and_every_tasks():
    from coordinator.console.studies import DATA_CATEGORIES

    assert set(SHARED_DATA_CATEGORIES.items()) <= set(DATA_CATEGORIES.items())
    for task in TASKS.values():
        assert set(task.data_categories.items()) <= set(DATA_CATEGORIES.items())


def test_a_category_bit_means_one_thing():
    class Clashing:
        task_id = "clash/v1"
        data_categories = {"oncology": 0}  # bit 0 is demographics

    with pytest.raises(ValueError, match="clashes"):
        data_categories([*TASKS.values(), Clashing()])


def test_the_portal_reads_the_patient_text_from_the_task():
    from node.portal.studies import data_text, task_text

    for task in TASKS.values():
        assert (task_text(task.task_id), data_text(task.task_id)) == (task.description, task.data_read)
    assert "ask the hospital" in data_text("unknown/v1")
