"""The one standardisation every task uses when it fits scales on training features.

The sample standard deviation (ddof=1): it is what FLamby computes (torch's default), so the FLamby benchmark
(benchmarks/flamby.py) reproduces its published figures, and it is the unbiased variance estimate; the shipped
tasks normalise with declared, fixed scales instead (nothing fitted on patients, docs/tasks.md), so no
private figure depends on the choice. One feature row gives no spread: its scale is 1.
"""

from __future__ import annotations

import numpy as np


def standardise(train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard deviation) per feature of 2-D features; std 1 where a feature is constant."""
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0, ddof=1) if len(train_features) > 1 else np.zeros_like(mean)
    std[std == 0] = 1.0
    return mean, std
