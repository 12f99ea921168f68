"""The wheel: every part with its package data, this project's benchmarks under the name `twinledger_benchmarks`
(Opacus 1.6 owns the top-level `benchmarks`), and both console scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # builds the wheel (about 15 s)
def test_the_wheel_ships_our_benchmarks_under_their_own_name_and_both_commands(tmp_path):
    # From a copy: setuptools leaves build/ and an egg-info in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "node_modules", "build", "*.egg-info",
                                                                "__pycache__", "demo-run", "docs", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("twinledger-*.whl")
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
