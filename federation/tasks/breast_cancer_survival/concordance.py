"""A concordance index from additive counts, so that hospitals' test sets can be pooled without pairing patients.

Each test patient adds 1 to one cell of `at_risk[t, s]` (t: the time bin of their follow-up, s: the bin of their
predicted risk) and, if their event was observed, 1 to the same cell of `events[t, s]`. Harrell's C counts pairs
(i, j) where i had the event and j was followed longer; the pair is concordant when i's predicted risk is
higher. From the counts, pairs in different time bins are ordered exactly; pairs in the same time bin cannot be
ordered and are left out; pairs in the same risk bin count as half concordant. The error this costs is bounded
from the same counts: `error_bound` is the most the exact C over the same patients can differ from the binned
one (all left-out pairs and all same-risk-bin pairs going either way).
"""

from __future__ import annotations

import numpy as np


def pair_counts(events: np.ndarray, at_risk: np.ndarray) -> tuple[float, float, float, float]:
    """(concordant + half of the same-risk-bin pairs, comparable pairs in different time bins, same-risk-bin
    pairs among them, pairs left out in the same time bin (at most)) from two (time bins, risk bins) counts."""
    events, at_risk = np.clip(events, 0, None), np.clip(at_risk, 0, None)  # noisy counts: negatives are noise
    later = np.cumsum(at_risk[::-1], axis=0)[::-1]  # later[t] = patients in time bins >= t
    later = np.vstack([later[1:], np.zeros_like(later[:1])])  # strictly later time bins
    lower_risk = np.cumsum(later, axis=1) - later  # by risk bin: later patients with a lower risk bin
    concordant = float((events * lower_risk).sum())
    same_bin = float((events * later).sum())
    comparable = float(events.sum(axis=1) @ later.sum(axis=1))
    within_time_bin = float((events.sum(axis=1) * at_risk.sum(axis=1)).sum())
    return concordant + 0.5 * same_bin, comparable, same_bin, within_time_bin


def binned_concordance(events: np.ndarray, at_risk: np.ndarray) -> tuple[float | None, float | None]:
    """(C-index, error bound), or (None, None) when no pair is comparable."""
    numerator, comparable, same_bin, left_out = pair_counts(events, at_risk)
    if comparable <= 0:
        return None, None
    c_index = numerator / comparable
    low = (numerator - 0.5 * same_bin) / (comparable + left_out)
    high = (numerator + 0.5 * same_bin + left_out) / (comparable + left_out)
    return min(max(c_index, 0.0), 1.0), max(c_index - low, high - c_index)


def harrell_concordance(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C over every comparable pair (exact; ties in risk count a half): for the non-private baseline and
    to measure the binning's error."""
    risk, time, event = (np.asarray(a, dtype=float).reshape(-1) for a in (risk, time, event))
    earlier = (time[:, None] < time[None, :]) & (event[:, None] == 1)
    higher = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    return float((earlier * higher).sum() / earlier.sum())
