"""Fisher-information identifiability of the twin's parameters on a virtual patient (node/twins/identifiability.py)."""

import numpy as np
import pytest

from node.twins.calibration import virtual_patient
from node.twins.identifiability import (
    identifiable_set, identifiable_with_others_unknown, posterior_relative_sd, relative_sd, sensitivities,
)

CANDIDATES = ("Gb", "Vmx", "kabs")


@pytest.fixture(scope="module")
def one_day():
    """(record, d CGM / d log theta) of adult#003's day: one batched simulation shared by the tests."""
    record, truth, _ = virtual_patient("adult#003", days=1, seed=2)
    (sens,) = sensitivities([(record, truth)], CANDIDATES)
    return record, sens


def test_glucose_level_is_identified_and_a_parameter_without_effect_is_not(one_day):
    record, sens = one_day
    assert sens.shape == (np.isfinite(record.cgm_mgdl).sum() - ((record.cgm_mgdl <= 40) | (record.cgm_mgdl >= 400)).sum(), 3)
    # Gb sets the level of every reading: its Cramer-Rao relative sd is tiny.
    assert relative_sd(sens, [0])[0] < 0.02
    # A column of zeros (a parameter the output does not depend on) is never identifiable.
    padded = np.hstack([sens, np.zeros((len(sens), 1))])
    found = identifiable_set([padded], CANDIDATES + ("none",), max_relative_sd=0.1)
    assert "Gb" in found["identifiable_parameters"] and "none" not in found["identifiable_parameters"]
    assert set(found["relative_sd_joint"]) == set(found["identifiable_parameters"])
    assert all(v < 0.1 for v in found["relative_sd_joint"].values())


def test_with_the_others_unknown_only_what_the_data_pin_down_counts(one_day):
    _, sens = one_day
    # Gb, Vmx, kabs at their population spread; "none" moves no reading; "fixed" moves readings as Gb does
    # but the population never varies it (like f, 0.9 in every published patient).
    padded = np.hstack([sens, np.zeros((len(sens), 1)), sens[:, :1]])
    prior = np.diag([0.04, 0.5, 1.0, 0.5, 0.0]) ** 2
    names = CANDIDATES + ("none", "fixed")
    posterior = posterior_relative_sd(padded, prior)
    assert np.all(posterior <= np.sqrt(np.diag(prior) + 1e-8))  # data never add uncertainty (1e-8: the floor)
    assert posterior[3] == pytest.approx(0.5, rel=1e-6)  # no effect: the population's spread, unchanged
    found = identifiable_with_others_unknown([padded], prior, names)
    assert "Gb" in found["identifiable_parameters_others_unknown"]
    assert not {"none", "fixed"} & set(found["identifiable_parameters_others_unknown"])  # the prior alone is no identification
    # An unknown nuisance parameter can only widen the others' bounds.
    assert posterior_relative_sd(padded[:, :1], prior[:1, :1])[0] <= posterior[0] + 1e-12
