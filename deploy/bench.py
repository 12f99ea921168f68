"""Moved to the top-level `benchmarks` package; kept until deploy/cli.py calls `benchmarks.run` itself."""

from benchmarks import BENCHMARKS, run  # noqa: F401
