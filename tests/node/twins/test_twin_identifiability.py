"""Fisher-information identifiability of the twin's parameters on a virtual patient (node/twins/identifiability.py)."""

import numpy as np

from node.twins.calibration import virtual_patient
from node.twins.identifiability import identifiable_set, relative_sd, sensitivities


def test_glucose_level_is_identified_and_a_parameter_without_effect_is_not():
    record, truth, _ = virtual_patient("adult#003", days=1, seed=2)
    candidates = ("Gb", "Vmx", "kabs")
    (sens,) = sensitivities([(record, truth)], candidates)
    assert sens.shape == (np.isfinite(record.cgm_mgdl).sum() - ((record.cgm_mgdl <= 40) | (record.cgm_mgdl >= 400)).sum(), 3)
    # Gb sets the level of every reading: its Cramer-Rao relative sd is tiny.
    assert relative_sd(sens, [0])[0] < 0.02
    # A column of zeros (a parameter the output does not depend on) is never identifiable.
    padded = np.hstack([sens, np.zeros((len(sens), 1))])
    found = identifiable_set([padded], candidates + ("none",), max_relative_sd=0.1)
    assert "Gb" in found["identifiable_parameters"] and "none" not in found["identifiable_parameters"]
    assert set(found["relative_sd_joint"]) == set(found["identifiable_parameters"])
    assert all(v < 0.1 for v in found["relative_sd_joint"].values())
