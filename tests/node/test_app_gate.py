"""The app gate: a run's app passes only when its FAB is the approved and the installed one, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from node import app_gate


def test_the_digest_is_flowers_fab_hash() -> None:
    assert app_gate.app_digest(b"fab") == hashlib.sha256(b"fab").hexdigest()


def test_an_app_equal_to_the_approved_and_installed_one_passes_with_or_without_0x() -> None:
    digest = app_gate.app_digest(b"fab")
    assert app_gate.check_app(b"fab", approved="0x" + digest.upper(), installed=digest) == digest


@pytest.mark.parametrize(("approved", "installed"), [("other", "same"), ("same", "other"), ("other", "other")])
def test_an_app_differing_from_either_is_refused(approved: str, installed: str) -> None:
    digest = app_gate.app_digest(b"fab")
    pick = {"same": digest, "other": app_gate.app_digest(b"another fab")}
    with pytest.raises(app_gate.AppNotApproved, match="not the approved"):
        app_gate.check_app(b"fab", approved=pick[approved], installed=pick[installed])


def test_the_installed_digest_is_deterministic_and_changes_with_the_code(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "pyproject.toml").write_text(
        '[project]\nname = "pkg"\nversion = "1.0.0"\n\n[tool.flwr.app]\npublisher = "t"\n\n'
        '[tool.flwr.app.components]\nserverapp = "pkg.app:server"\nclientapp = "pkg.app:client"\n'
    )
    (app / "pkg" / "app.py").write_text("x = 1\n")
    first = app_gate.installed_app_digest(app)
    assert app_gate.installed_app_digest(app) == first
    (app / "pkg" / "app.py").write_text("x = 2\n")
    assert app_gate.installed_app_digest(app) != first


def test_the_installed_app_is_imported_by_reference() -> None:
    assert app_gate.load_installed_app("hashlib:sha256") is hashlib.sha256
