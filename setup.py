"""What pyproject.toml cannot say: this checkout's benchmarks/ folder installs as the package `twinledger_benchmarks`.

Opacus 1.6, a dependency, installs a top-level package named `benchmarks` into site-packages: a wheel of ours
holding `benchmarks/` would overwrite its files, and `import benchmarks` would find either. The folder keeps its
name (the issue 10 layout; `python -m benchmarks.tune_training` from the checkout), its modules import each other
relatively, and `twinledger bench` imports `twinledger_benchmarks` (deploy/cli.py). Everything else is in
pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

PARTS = ("node", "coordinator", "contracts", "federation", "deploy")

setup(
    packages=[*find_namespace_packages(include=[name for part in PARTS for name in (part, f"{part}.*")]),
              "twinledger_benchmarks"],
    package_dir={"twinledger_benchmarks": "benchmarks"},
)
