"""Evaluation sums that partition the patients (issue 17): a histogram's cells, a subgroup's sums. One patient
adds to at most one block of a partition, so the release's sensitivity counts a partition as its largest block;
the node checks the claim on every patient before anything is released."""

from __future__ import annotations

import math

import numpy as np
import pytest

from node.privacy import noisy_sums, sums_sensitivity
from node.service import HospitalNode, Refusal

BOUNDS = {"examples": 1.0, "a/correct": 1.0, "a/examples": 1.0, "b/correct": 1.0, "b/examples": 1.0}
PARTITION = ((("a/correct", "a/examples"), ("b/correct", "b/examples")),)


def test_a_partition_counts_as_its_largest_block():
    assert sums_sensitivity(BOUNDS) == pytest.approx(math.sqrt(5))
    assert sums_sensitivity(BOUNDS, PARTITION) == pytest.approx(math.sqrt(1 + 2))
    histogram = {f"cell-{i}": 1.0 for i in range(100)}
    assert sums_sensitivity(histogram, (tuple((k,) for k in histogram),)) == 1.0
    with pytest.raises(ValueError, match="without a bound"):
        sums_sensitivity({"examples": 1.0}, PARTITION)


def test_noise_follows_the_partitioned_sensitivity():
    sums = dict.fromkeys(BOUNDS, 0.0)
    draws = np.array([noisy_sums(sums, BOUNDS, noise_multiplier=2.0, partitions=PARTITION)["a/correct"]
                      for _ in range(4000)])
    assert draws.std() == pytest.approx(2.0 * math.sqrt(3), rel=0.08)


class _Task:
    task_id = "partitioned/v1"
    evaluation_bounds = release_bounds = BOUNDS
    evaluation_partitions = release_partitions = PARTITION

    def __init__(self, both: bool):
        self.both = both

    def patient_evaluation_examples(self, record):
        return np.zeros((1, 1), np.float32), np.zeros(1, np.float32)

    def patient_release_sums(self, model, features, labels, record):
        return {"examples": 1, "a/correct": 1, "a/examples": 1, "b/correct": 0, "b/examples": int(self.both)}


def test_a_patient_in_two_blocks_of_a_partition_releases_nothing():
    totals = HospitalNode._clipped_sums(_Task(both=False), None, [{}, {}], 0.0, 1.0)
    assert totals["a/examples"] == 2 and totals["b/examples"] == 0
    with pytest.raises(Refusal, match="two blocks of a partition"):
        HospitalNode._clipped_sums(_Task(both=True), None, [{}], 0.0, 1.0)
