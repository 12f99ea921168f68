"""Glycaemic outcome metrics of a glucose trace (mg/dL), as clinicians read them.

- Time in ranges (international consensus, Battelino et al., Diabetes Care 42(8), 2019): in range
  70-180 mg/dL inclusive, below 70, below 54, above 180, above 250 (level 2 hyperglycaemia), as fractions
  of the readings.
- Glucose management indicator (Bergenstal et al., "Glucose Management Indicator (GMI): a new term for
  estimating A1C from continuous glucose monitoring", Diabetes Care 41(11), 2018; adopted by the 2019
  consensus): GMI (%) = 3.31 + 0.02392 x mean glucose (mg/dL).
- Low and high blood glucose indices (Kovatchev et al., "Symmetrization of the blood glucose measurement
  scale and its applications", Diabetes Care 20(11), 1997; Kovatchev et al., Diabetes Technol Ther 2005):
      f(G) = 1.509 ((ln G)^1.084 - 5.381),  r(G) = 10 f(G)^2,
      LBGI = mean of r(G) where f(G) < 0 (else 0),  HBGI = mean of r(G) where f(G) > 0 (else 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

METRIC_NAMES = ("time_in_range_70_180", "time_below_70", "time_below_54", "time_above_180", "lbgi", "hbgi",
                "mean_glucose_mgdl", "cv_glucose")
CONSENSUS_2019_NAMES = ("time_above_250", "gmi_percent")
ALL_METRIC_NAMES = METRIC_NAMES + CONSENSUS_2019_NAMES  # what node/twins/api.py serves (its Metrics model)


def gmi_percent(mean_glucose_mgdl) -> float:
    """Glucose management indicator (%), from the mean glucose in mg/dL (Bergenstal et al. 2018)."""
    return 3.31 + 0.02392 * float(mean_glucose_mgdl)


def risk_function(glucose_mgdl) -> np.ndarray:
    """Kovatchev's symmetrised f(G) for glucose in mg/dL (negative below about 112.5 mg/dL)."""
    glucose = np.asarray(glucose_mgdl, dtype=float)
    if (glucose <= 0).any():
        raise ValueError("glucose must be positive (mg/dL)")
    return 1.509 * (np.log(glucose) ** 1.084 - 5.381)


@dataclass(frozen=True)
class GlycemicMetrics:
    time_in_range_70_180: float
    time_below_70: float
    time_below_54: float
    time_above_180: float
    lbgi: float
    hbgi: float
    mean_glucose_mgdl: float
    cv_glucose: float
    time_above_250: float
    gmi_percent: float

    def as_dict(self) -> dict:
        return asdict(self)


def metrics(glucose_mgdl) -> GlycemicMetrics:
    """Metrics of one trace (NaN readings are left out)."""
    glucose = np.asarray(glucose_mgdl, dtype=float).ravel()
    glucose = glucose[np.isfinite(glucose)]
    if glucose.size == 0:
        raise ValueError("no glucose readings")
    f = risk_function(glucose)
    r = 10.0 * f**2
    mean = float(glucose.mean())
    return GlycemicMetrics(
        time_in_range_70_180=float(((glucose >= 70) & (glucose <= 180)).mean()),
        time_below_70=float((glucose < 70).mean()),
        time_below_54=float((glucose < 54).mean()),
        time_above_180=float((glucose > 180).mean()),
        lbgi=float(np.where(f < 0, r, 0.0).mean()),
        hbgi=float(np.where(f > 0, r, 0.0).mean()),
        mean_glucose_mgdl=mean,
        cv_glucose=float(glucose.std() / mean),
        time_above_250=float((glucose > 250).mean()),
        gmi_percent=gmi_percent(mean),
    )


def metrics_rows(glucose_mgdl) -> dict[str, np.ndarray]:
    """Each metric for each row of a (traces, minutes) array: name -> (traces,)."""
    rows = [metrics(row).as_dict() for row in np.atleast_2d(glucose_mgdl)]
    return {name: np.array([r[name] for r in rows]) for name in ALL_METRIC_NAMES}
