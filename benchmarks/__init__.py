"""Benchmarks: each measures ratios side by side in one run and prints, as its last line, one JSON object.

    twinledger bench ledger --json     batched vs one-call-per-patient consent reads on anvil; gas figures
    twinledger bench training --json   local, pooled, FedAvg and FedAdam with and without DP-SGD (FLamby heart disease)
    twinledger bench overhead --json   DP-SGD step, consent-gated epoch and Flower round vs their plain counterparts
    twinledger bench twin --json       UVA/Padova patient twins: 1,000 patient-days batched vs one patient at a time
    twinledger bench load --json       500 patients changing consent at once through the portal; 1M consents read at a block

One module each (ledger, training, overhead, twin, load with consent_read; tune_training tunes the training benchmark's settings);
every one that needs a federation builds it with deploy/consortium.py. Results go to docs/benchmarks.md.

A wheel installs this folder as the package `twinledger_benchmarks` (setup.py): Opacus 1.6 installs a top-level
package of its own named `benchmarks`. So the modules import each other relatively (`from .flamby import ...`),
and work under either name.
"""

from __future__ import annotations

import importlib
import json
import sys

# name -> (module, function); imported when run, so that listing the names imports neither torch nor web3.
BENCHMARKS = {
    "ledger": (".ledger", "bench_ledger"),
    "training": (".training", "bench_training"),
    "overhead": (".overhead", "bench_overhead"),
    "twin": (".twin", "bench_twin"),
    "load": (".load", "bench_load"),
    "survival": (".survival", "bench_survival"),
}
NAMES = tuple(BENCHMARKS)


def benchmark(name: str):
    """The function of benchmark `name` (KeyError if there is none)."""
    module, function = BENCHMARKS[name]
    return getattr(importlib.import_module(module, __name__), function)


def run(name: str, *, as_json: bool, **kwargs) -> int:
    """Run benchmark `name` with `kwargs`; print its figures (a table unless `as_json`) and, last, one JSON line."""
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}", file=sys.stderr)
        return 2
    result = benchmark(name)(**kwargs)
    if not as_json:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    print(json.dumps(result))
    return 0
