"""Slither on the Solidity contracts: no High-impact finding is allowed.

Slither runs from its own venv (``.venv-slither``, created on first use, which takes a minute or so)
and compiles through the solc-js shim, offline; see ``tests/contracts/slither.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.contracts import slither as sa

# Below the tests' own timeout, so that a slow run fails with Slither's error rather than pytest's.
RUN_TIMEOUT_S = 840

pytestmark = [pytest.mark.slow]  # a minute or more: Slither, and its venv on first use

# A classic reentrancy (Slither: reentrancy-eth, High), which also imports from OpenZeppelin.
VULNERABLE_SOL = """\
// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Context} from "@openzeppelin/contracts/utils/Context.sol";

contract Vault is Context {
    mapping(address => uint256) public balances;

    function deposit() external payable {
        balances[_msgSender()] += msg.value;
    }

    function withdraw() external {
        uint256 amount = balances[msg.sender];
        (bool ok,) = msg.sender.call{value: amount}("");
        require(ok, "transfer failed");
        balances[msg.sender] = 0;
    }
}
"""


@pytest.mark.timeout(900)
def test_slither_finds_no_high_impact_issue_in_the_contracts():
    result = sa.run_slither(venv=sa.DEFAULT_VENV, timeout_s=RUN_TIMEOUT_S)

    # Guard against a vacuous pass: every contract of ours was compiled and analysed.
    ours = {p.resolve().as_posix() for p in sa.SOURCES_DIR.glob("*.sol")}
    assert ours, "no Solidity sources found"
    assert ours <= set(result["analyzed_files"]), (ours, result["analyzed_files"])

    high = [f for f in sa.findings(result) if f["impact"] == "High"]
    assert not high, f"Slither reports {len(high)} High-impact finding(s):\n\n" + "\n\n".join(
        sa.format_finding(f) for f in high
    )


@pytest.mark.timeout(900)
def test_slither_reports_high_impact_issue_in_vulnerable_contract(tmp_path: Path):
    """The same pipeline, on a project laid out like ours, does report a High finding."""
    project_root = sa.PROJECT_ROOT
    (tmp_path / "contracts" / "src").mkdir(parents=True)
    # A copy of the shim takes its root from its own location: tmp_path, with our node_modules.
    shutil.copy2(sa.SOLC_SHIM, tmp_path / "contracts" / "solc")
    (tmp_path / "node_modules").symlink_to(project_root / "node_modules")
    (tmp_path / "contracts" / "src" / "Vault.sol").write_text(VULNERABLE_SOL)

    result = sa.run_slither(
        venv=sa.DEFAULT_VENV,
        timeout_s=RUN_TIMEOUT_S,
        sources_dir=tmp_path / "contracts" / "src",
        solc=tmp_path / "contracts" / "solc",
    )

    high = [f for f in sa.findings(result) if f["impact"] == "High"]
    assert [f["check"] for f in high] == ["reentrancy-eth"], [sa.format_finding(f) for f in high]
    assert "Vault.withdraw()" in high[0]["description"]
    # Nothing wholly inside OpenZeppelin is reported.
    for finding in sa.findings(result):
        assert any(
            "/node_modules/" not in e.get("source_mapping", {}).get("filename_absolute", "")
            for e in finding["elements"]
        ), sa.format_finding(finding)
