"""The wheel: every part with its package data, this project's benchmarks under the name `twinledger_benchmarks`
(Opacus 1.6 owns the top-level `benchmarks`), both console scripts, and a one-round federation run from the
installed wheel outside the checkout (issue 14's "done when")."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built once for this module (about 15 s)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    # From a copy: setuptools leaves build/ and an egg-info in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "node_modules", "build", "*.egg-info",
                                                                "__pycache__", "demo-run", "docs", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    [built] = tmp_path.glob("twinledger-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_ships_our_benchmarks_under_their_own_name_and_both_commands(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "twinledger_benchmarks/__init__.py" in names and "twinledger_benchmarks/training.py" in names
    assert not [name for name in names if name.startswith("benchmarks/")], "would overwrite Opacus' benchmarks"
    for data in ("node/twins/data/uva-padova/", "coordinator/flower_app/pyproject.toml", "contracts/src/"):
        assert any(name.startswith(data) for name in names), data
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "twinledger = deploy.cli:main" in entry_points
    assert "twinledger-probe = federation.health:main" in entry_points
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from deploy import cli; b = cli._our_benchmarks(); print(b.__file__); print(b.benchmark('twin').__module__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin"},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [str(site / "twinledger_benchmarks" / "__init__.py"), "twinledger_benchmarks.twin"]


def _install(wheel: Path, venv: Path) -> dict:
    """The wheel in a fresh venv, its dependencies through a .pth to this venv (no download), and the console
    scripts pip would have written for Flower (the node and coordinator start flower-superlink, flwr ... from
    their own venv's bin). Returns the environment to run it in: no PYTHONPATH, the checkout nowhere on it."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    subprocess.run([str(venv / "bin" / "pip"), "install", "--no-deps", "--quiet", "--no-index", str(wheel)],
                   check=True, timeout=300, env=env)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for entry in importlib.metadata.distribution("flwr").entry_points.select(group="console_scripts"):
        module, function = entry.value.split(":")
        script = venv / "bin" / entry.name
        script.write_text(f"#!{venv}/bin/python\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
        script.chmod(0o755)
    # anvil, as a hospital's chain would be installed: on the PATH (the checkout's npm copy, nothing downloaded)
    env["PATH"] = os.pathsep.join([str(ROOT / "node_modules" / ".bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    return env


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_installed_wheel_runs_help_and_a_one_round_federation_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    env = _install(wheel, venv)
    away = tmp_path / "hospital-it"
    away.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import coordinator, node; print(coordinator.__file__)"],
                           cwd=away, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the wheel's code, not the checkout's
    helped = subprocess.run([str(venv / "bin" / "twinledger"), "--help"], cwd=away, env=env, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "coordinator" in helped.stdout and "node" in helped.stdout
    ran = subprocess.run([str(venv / "bin" / "twinledger"), "study", "run", "--task", "heart-disease/v1", "--rounds", "1",
                          "--workdir", "run", "--report", "run/report.json", "--timeout-s", "600"],
                         cwd=away, env=env, capture_output=True, text=True, timeout=800)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    report = json.loads((away / "run" / "report.json").read_text())
    assert report["status"] == "finished" and len(report["rounds"]) == 1
    assert report["rounds"][0]["anchor_block"] is not None
    assert "audit violations 0" in ran.stdout
