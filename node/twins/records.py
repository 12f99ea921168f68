"""A type 1 diabetes patient's own records, as twins read them: CGM, meals and insulin on a minute grid.

Every array has one entry per minute from `start`; a minute without a CGM reading holds NaN in
`cgm_mgdl`, a minute without a meal or bolus holds 0. Importers (FHIR R4 Bundles, CSV) produce this
shape; calibration, forecasting and the federated forecaster consume it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class DiabetesRecord:
    patient_id: str  # the node's record id (never put on chain)
    start: datetime  # UTC, minute 0
    cgm_mgdl: np.ndarray  # (minutes,) sensor glucose, NaN where no reading
    carbs_g: np.ndarray  # (minutes,) carbohydrate eaten in that minute
    bolus_u: np.ndarray  # (minutes,) insulin bolus given in that minute
    basal_u_per_h: np.ndarray  # (minutes,) basal rate in effect during that minute
    body_weight_kg: float | None = None

    def __post_init__(self):
        n = len(self.cgm_mgdl)
        for name in ("carbs_g", "bolus_u", "basal_u_per_h"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} minutes, cgm_mgdl has {n}")

    @property
    def minutes(self) -> int:
        return len(self.cgm_mgdl)

    def window(self, first_min: int, last_min: int) -> "DiabetesRecord":
        """Minutes [first_min, last_min) as a record of their own (start moved accordingly)."""
        from datetime import timedelta

        part = slice(first_min, last_min)
        return DiabetesRecord(
            patient_id=self.patient_id,
            start=self.start + timedelta(minutes=first_min),
            cgm_mgdl=self.cgm_mgdl[part],
            carbs_g=self.carbs_g[part],
            bolus_u=self.bolus_u[part],
            basal_u_per_h=self.basal_u_per_h[part],
            body_weight_kg=self.body_weight_kg,
        )
