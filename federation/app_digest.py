"""The digest of a Flower app: what a study records on chain and what a hospital's app gate compares.

Flower identifies the app a run carries by `fab_hash`, the SHA-256 of the FAB's bytes (flwr 1.41:
`flwr/cli/run/run.py` builds the FAB with `flwr.cli.build.build_fab_from_disk` and hashes it with
`hashlib.sha256(fab_bytes).hexdigest()`). The build is deterministic (fixed zip dates, sorted files), so the
operator who records a study's app, the coordinator's `flwr run` and each hospital compute the same value from
the same app directory. Both sides use this module: the operator (`study propose`), the demo's builder and the
node's app gate (node/app_gate.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path


def digest_of(fab_content: bytes) -> str:
    """A FAB's digest as Flower computes it: 64 lowercase hex digits."""
    return hashlib.sha256(fab_content).hexdigest()


def fab_digest(app_dir: Path) -> str:
    """Digest of the FAB `flwr build` / `flwr run` makes from the Flower app at `app_dir` (its pyproject.toml)."""
    from flwr.cli.build import build_fab_from_disk

    return digest_of(build_fab_from_disk(Path(app_dir)))


def packaged_app_dir() -> Path | None:
    """The Flower app installed with TwinLedger (coordinator/flower_app, package data), found without importing
    the coordinator's code; None when it is not installed."""
    spec = importlib.util.find_spec("coordinator")
    if spec is None or not spec.submodule_search_locations:
        return None
    app_dir = Path(next(iter(spec.submodule_search_locations))) / "flower_app"
    return app_dir if (app_dir / "pyproject.toml").exists() else None


@functools.cache
def packaged_app_digest() -> str:
    """The digest of the packaged Flower app: what studies record on chain (`Consortium.setStudyApp`).

    Raises FileNotFoundError when the app is not installed."""
    app_dir = packaged_app_dir()
    if app_dir is None:
        raise FileNotFoundError("the packaged Flower app (coordinator/flower_app) is not installed")
    return fab_digest(app_dir)
