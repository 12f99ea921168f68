"""The compiled contracts shipped in the wheel (contracts/compiled.json, issue 14 item 1): what the sources
compile to, used without a compiler, and `twinledger chain deploy` from an installed wheel with no checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from contracts import build
from contracts import ledger as lg
from deploy.consortium import eth_tester

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_artifacts_are_what_the_sources_compile_to(artifacts):
    """`artifacts` is the compiler's output for today's sources (cached by their hash): after any change to a
    contract, `python -m contracts.build` must write compiled.json again, or this fails."""
    shipped = build.shipped_artifacts()
    assert shipped is not None, "contracts/compiled.json is missing: run python -m contracts.build"
    assert shipped["sources_digest"] == build.sources_digest(), "compiled.json is stale: run python -m contracts.build"
    assert shipped["contracts"] == artifacts


@pytest.mark.slow
def test_a_fresh_compilation_gives_the_shipped_artifacts_byte_for_byte():
    """Without the cache: the compiler (and OpenZeppelin from node_modules) still produce what is shipped."""
    assert build.compile_contracts(use_cache=False) == build.shipped_artifacts()["contracts"]


def test_deploying_needs_no_compiler_while_the_shipped_artifacts_match(monkeypatch):
    def no_compiler(**_):
        raise build.CompileError("no compiler here")

    monkeypatch.setattr(build, "compile_contracts", no_compiler)
    w3 = eth_tester()
    deployment = lg.deploy(w3, _funded(w3))
    assert w3.eth.get_code(deployment.consent_registry)


def test_stale_artifacts_and_no_compiler_is_a_clear_ledger_error(monkeypatch, tmp_path):
    """An edited contract is never deployed from stale bytecode; without a compiler that is a sentence."""
    stale = tmp_path / "compiled.json"
    stale.write_text(json.dumps({**build.shipped_artifacts(), "sources_digest": "0" * 16}))
    monkeypatch.setattr(build, "SHIPPED_FILE", stale)
    monkeypatch.setattr(build, "SOLC_SHIM", tmp_path / "no-solc-here")
    monkeypatch.setattr(build, "CACHE_DIR", tmp_path / "cache")
    w3 = eth_tester()
    with pytest.raises(lg.LedgerError, match="compiled.json does not match the sources"):
        lg.deploy(w3, _funded(w3))


def _funded(w3) -> str:
    from deploy.consortium import funded_key

    return funded_key(w3, ether=10)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_wheel_deploys_the_contracts_without_the_checkout(tmp_path, anvil_url):
    """pip wheel, pip install into a scratch venv (its dependencies through a .pth to the project's venv), and
    `twinledger chain deploy` from a directory outside the checkout, with no compiler reachable."""
    # Built from a copy of the sources, so the checkout gets no build/ or egg-info, and no node_modules can leak in.
    sources = tmp_path / "sources"
    shutil.copytree(PROJECT_ROOT, sources, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "node_modules", "build", "*.egg-info", "__pycache__", "tests", "docs"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(wheels), str(sources)], check=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # Without PYTHONPATH: a checkout on it (with its egg-info) would make pip take twinledger as installed already.
    clean_env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    subprocess.run([str(venv / "bin" / "pip"), "install", "--no-deps", "--quiet", "--no-index",
                    str(next(wheels.glob("twinledger-*.whl")))], check=True, timeout=300, env=clean_env)
    # Its dependencies from the project's venv, added after the install (that venv lists an editable twinledger,
    # which pip would take as already installed); a path a .pth adds is not scanned for .pth files itself.
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = site / "contracts"
    assert (installed / "compiled.json").is_file() and not (site / "node_modules").exists()
    os.chmod(installed / "solc", 0o644)  # the deploy must not need the compiler at all

    home = tmp_path / "operator"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import contracts; print(contracts.__file__)"],
                           cwd=home, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert Path(where.stdout.strip()).parent == installed  # the wheel's code, not the checkout's
    done = subprocess.run([str(venv / "bin" / "twinledger"), "chain", "deploy", "--rpc-url", anvil_url,
                           "--fund-from-dev-account"], cwd=home, env={**env, "TWINLEDGER_OPERATOR_KEY_PASSPHRASE": "wheel"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    deployment = lg.Deployment.load(home / "deployment.json")
    assert lg.connect(anvil_url).eth.get_code(deployment.consent_registry)
    assert not (installed / "build").exists()  # it compiled nothing
