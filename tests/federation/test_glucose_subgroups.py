"""The glucose forecaster's fairness subgroups (issue 17): its metrics are also reported per age group (child,
adolescent, adult) from the records' age, by the same per-patient-clipped sums a node releases."""

from __future__ import annotations

import numpy as np
import pytest

from federation.tasks import TASKS
from federation.tasks.glucose_forecast import AGE_GROUPS, age_group
from federation.tasks.metrics import subgroup_metrics
from node.service import HospitalNode
from node.twins.cohort import simulate_patients
from node.twins.parameters import load_patient, patient_names

TASK = TASKS["glucose-forecast/v1"]


@pytest.mark.parametrize("age, group", [(0, "child"), (12.9, "child"), (13, "adolescent"), (19, "adolescent"),
                                        (20, "adult"), (68.0, "adult"), (None, None), (-1, None), (121, None),
                                        (float("nan"), None), ("12", None), (True, None)])
def test_an_age_falls_in_one_group_or_none(age, group):
    assert age_group(age) == group


def test_every_virtual_patient_is_in_the_group_its_name_says():
    for name in patient_names():
        assert age_group(load_patient(name).age_years) == name.split("#")[0], name


def test_the_task_declares_the_age_group_and_reads_the_age():
    (subgroup,) = TASK.subgroups
    assert (subgroup.axis, subgroup.groups) == ("age group", AGE_GROUPS)
    assert "age_years" in TASK.fields and "demographics" in TASK.data_categories and "age" in TASK.data_read
    assert subgroup.of({"age_years": 9.0}) == "child" and subgroup.of({"age_years": None}) is None
    assert len(TASK.release_partitions) == len(TASK.evaluation_partitions) + 1


@pytest.fixture(scope="module")
def clinicals():
    records = simulate_patients(["child#002", "adolescent#003", "adult#001", "adult#005"], days=1, seed=4)
    found = [r.to_clinical() for r in records]
    found[3] = {**found[3], "age_years": None}  # an adult without a recorded age: in no group
    return [{name: c.get(name) for name in TASK.fields} for c in found]  # what the consent gate passes on


def test_node_sums_of_the_age_groups_partition_the_patients_with_an_age(clinicals):
    model = TASK.build_model()
    shift, scale = TASK.normaliser(None)
    total = HospitalNode._clipped_sums(TASK, model, clinicals, shift, scale)
    per_patient = [HospitalNode._clipped_sums(TASK, model, [c], shift, scale) for c in clinicals]
    assert set(total) == set(TASK.release_bounds)
    groups = {g: total[f"age group={g}/windows"] for g in AGE_GROUPS}
    assert groups == {"child": per_patient[0]["windows"], "adolescent": per_patient[1]["windows"],
                      "adult": per_patient[2]["windows"]}
    assert min(groups.values()) > 0 and per_patient[3]["windows"] > 0
    assert sum(groups.values()) == total["windows"] - per_patient[3]["windows"]  # the ageless patient: no group
    for key in ("sse-mgdl2", "sse-lvcf-mgdl2", "loss-sum"):
        assert sum(total[f"age group={g}/{key}"] for g in AGE_GROUPS) == pytest.approx(
            total[key] - per_patient[3][key])


def test_each_group_gets_the_headline_from_its_own_sums(clinicals):
    model = TASK.build_model()
    shift, scale = TASK.normaliser(None)
    by_hospital = {"a": HospitalNode._clipped_sums(TASK, model, clinicals[:2], shift, scale),
                   "b": HospitalNode._clipped_sums(TASK, model, clinicals[2:], shift, scale)}
    groups = subgroup_metrics(TASK, by_hospital)["age group"]
    child = TASK.summarise(HospitalNode._clipped_sums(TASK, model, clinicals[:1], shift, scale))
    assert groups["child"]["rmse_30min_mgdl"] == pytest.approx(child["rmse_30min_mgdl"])
    assert all(np.isfinite(groups[g]["rmse_30min_mgdl"]) for g in AGE_GROUPS)
