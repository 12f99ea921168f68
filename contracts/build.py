"""Compile the Solidity sources through py-solc-x, using the solc-js shim next to this file.

Nothing is downloaded: the compiler is the npm package ``solc`` installed from the lockfile. Compiled
artifacts are cached under ``contracts/build/`` keyed by a hash of the sources and settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import solcx

CONTRACTS_DIR = Path(__file__).resolve().parent
SOURCES_DIR = CONTRACTS_DIR / "src"
SOLC_SHIM = CONTRACTS_DIR / "solc"
CACHE_DIR = CONTRACTS_DIR / "build"
CONTRACT_NAMES = ("Consortium", "ConsentRegistry")

# py-evm (the in-process test chain) implements Prague; newer solc versions default to Osaka.
EVM_VERSION = "prague"
OPTIMIZER_RUNS = 10_000


class CompileError(RuntimeError):
    """The Solidity compiler rejected the sources or could not run."""


def _standard_input() -> dict:
    sources = {
        path.name: {"content": path.read_text()} for path in sorted(SOURCES_DIR.glob("*.sol"))
    }
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "viaIR": True,
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }


def compile_contracts(*, use_cache: bool = True) -> dict[str, dict]:
    """Return ``{name: {"abi": [...], "bytecode": "0x..."}}`` for the TwinLedger contracts."""
    standard_input = _standard_input()
    digest = hashlib.sha256(json.dumps(standard_input, sort_keys=True).encode()).hexdigest()[:16]
    cache_file = CACHE_DIR / f"artifacts-{digest}.json"
    if use_cache and cache_file.exists():
        return json.loads(cache_file.read_text())
    try:
        output = solcx.compile_standard(standard_input, solc_binary=SOLC_SHIM)
    except solcx.exceptions.SolcError as exc:
        raise CompileError(f"the Solidity compiler failed: {exc}") from exc
    artifacts = {}
    for source in output["contracts"].values():
        for name, compiled in source.items():
            if name in CONTRACT_NAMES:
                artifacts[name] = {
                    "abi": compiled["abi"],
                    "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
                }
    missing = set(CONTRACT_NAMES) - set(artifacts)
    if missing:
        raise CompileError(f"the compiler produced no output for {sorted(missing)}")
    CACHE_DIR.mkdir(exist_ok=True)
    cache_file.write_text(json.dumps(artifacts))
    return artifacts
