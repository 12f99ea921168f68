"""Compile the Solidity sources through py-solc-x, using the solc-js shim next to this file.

Nothing is downloaded: the compiler is the npm package ``solc`` installed from the lockfile. Compiled
artifacts are cached under ``contracts/build/`` keyed by a hash of the sources and settings.

``contracts/compiled.json`` holds the compiled artifacts with that hash, committed and shipped in the wheel,
so that an install without the checkout (no Node.js, no solc-js) deploys the contracts without compiling:
:func:`deployable_artifacts` uses it only while it matches the sources. After changing a contract, write it
again with ``python -m contracts.build``; a test recompiles and compares, so it cannot go stale unnoticed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import solcx

from federation.files import write_atomically

CONTRACTS_DIR = Path(__file__).resolve().parent
SOURCES_DIR = CONTRACTS_DIR / "src"
SOLC_SHIM = CONTRACTS_DIR / "solc"
CACHE_DIR = CONTRACTS_DIR / "build"
SHIPPED_FILE = CONTRACTS_DIR / "compiled.json"
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


def sources_digest() -> str:
    """A hash of the compiler's whole input (every source and setting): what the artifacts are keyed by."""
    return hashlib.sha256(json.dumps(_standard_input(), sort_keys=True).encode()).hexdigest()[:16]


def compile_contracts(*, use_cache: bool = True) -> dict[str, dict]:
    """Return ``{name: {"abi": [...], "bytecode": "0x..."}}`` for the TwinLedger contracts."""
    standard_input = _standard_input()
    digest = sources_digest()
    cache_file = CACHE_DIR / f"artifacts-{digest}.json"
    if use_cache and cache_file.exists():
        return json.loads(cache_file.read_text())
    try:
        output = solcx.compile_standard(standard_input, solc_binary=SOLC_SHIM)
    except solcx.exceptions.SolcError as exc:
        raise CompileError(f"the Solidity compiler failed: {exc}") from exc
    except OSError as exc:  # the shim is missing or not executable (an install without the checkout)
        raise CompileError(f"the Solidity compiler cannot run ({exc}): {SHIPPED_FILE.name} does not match the "
                           "sources, and compiling needs the checkout with `npm ci` done") from exc
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
    # Two test workers (or a node and a test) may compile at once: a reader must never see half a file.
    write_atomically(cache_file, json.dumps(artifacts).encode())
    return artifacts


def shipped_artifacts() -> dict | None:
    """The committed artifacts as ``{"sources_digest": ..., "contracts": {...}}``, or None if there are none."""
    try:
        return json.loads(SHIPPED_FILE.read_text())
    except FileNotFoundError:
        return None


def deployable_artifacts() -> dict[str, dict]:
    """The artifacts to deploy: the shipped ones when they were compiled from these very sources, else a
    compilation (so an edited contract is never deployed from stale bytecode)."""
    shipped = shipped_artifacts()
    if shipped is not None and shipped.get("sources_digest") == sources_digest():
        return shipped["contracts"]
    return compile_contracts()


def write_shipped_artifacts() -> Path:
    """Compile afresh and write ``contracts/compiled.json``."""
    artifacts = compile_contracts(use_cache=False)
    SHIPPED_FILE.write_text(json.dumps({"sources_digest": sources_digest(), "contracts": artifacts},
                                       indent=1, sort_keys=True) + "\n")
    return SHIPPED_FILE


if __name__ == "__main__":
    print(f"wrote {write_shipped_artifacts()}")
