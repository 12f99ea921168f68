"""Metrics beyond accuracy (issue 17): the report page prints a metric with its declared precision, on its declared
range from its chance level, and says how it was computed over the hospitals; per-hospital metrics are kept."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.report_page import _y_range, write_report_page
from federation.tasks import TASKS
from federation.tasks.base import MEAN_OVER_HOSPITALS, STRATIFIED, Metric
from federation.tasks.metrics import round_metrics

C_INDEX = Metric("c_index", "Concordance index", decimals=3, low=0.0, high=1.0, chance=0.5, pooling=STRATIFIED,
                 description="share of comparable patient pairs whose predicted risks are in the order of their events")


def _report(metric: Metric) -> dict:
    rounds = [{"round": r, "block": 100 + r, "metrics": {"c_index": value}, "used": {"a": 50, "b": 40},
               "epsilon": {"a": r / 2, "b": r / 2}, "hospital_metrics": {"a": {"c_index": value + 0.02},
                                                                       "b": {"c_index": value - 0.03}}}
              for r, value in ((1, 0.515), (2, 0.775))]
    return {"study": {"id": "0x12", "purpose": "HRESCH", "task": "survival/v1", "epsilon_budget": 3.0,
                      "delta": 1e-5, "rounds": 2, "metric": metric.as_dict()},
            "hospitals": [{"name": n, "patients": 60, "consented": 55, "epsilon_spent": 1.0, "epsilon_budget": 3.0}
                          for n in ("a", "b")],
            "rounds": rounds, "audit": {"violations": 0, "checked": 10, "commitment_mismatches": 0}}


def test_a_concordance_index_is_printed_to_three_places_with_what_it_is(tmp_path):
    page = write_report_page(_report(C_INDEX), tmp_path / "report.json").read_text()
    assert "0.515" in page and "0.775" in page and ">0.8<" not in page
    assert "stratified by hospital" in page and "chance level 0.500" in page
    assert "Per hospital" in page and "0.795" in page and "0.745" in page  # the last round's, per hospital


def test_the_axis_starts_below_chance_not_at_zero_and_ends_at_the_range():
    bottom, top = _y_range(C_INDEX.as_dict(), [0.515, 0.775])
    assert 0.4 < bottom < 0.515 and top == 1.0
    accuracy = TASKS["heart-disease/v1"].headline.as_dict()
    assert _y_range(accuracy, [70.0, 76.0]) == (0.0, 100.0)


def test_metric_shows_its_own_precision():
    assert C_INDEX.shown(0.7751) == "0.775"
    assert TASKS["heart-disease/v1"].headline.shown(0.8123) == "81.2%"
    assert TASKS["glucose-forecast/v1"].headline.shown(20.47) == "20.5 mg/dL"


def test_round_metrics_keep_each_hospital_and_a_mean_over_hospitals_says_so():
    task = TASKS["heart-disease/v1"]
    sums = {"a": {"examples": 100, "correct": 90, "loss-sum": 30, "positives": 40},
            "b": {"examples": 10, "correct": 5, "loss-sum": 6, "positives": 5}}
    pooled, per_hospital, _ = round_metrics(task, sums)
    assert pooled["accuracy"] == pytest.approx(95 / 110)  # weighted by examples: the pooled test set
    assert per_hospital["a"]["accuracy"] == 0.9 and per_hospital["b"]["accuracy"] == 0.5

    class Mean(type(task)):
        headline = Metric("accuracy", "Mean accuracy", pooling=MEAN_OVER_HOSPITALS)

    pooled, _, _ = round_metrics(Mean(), sums)
    assert pooled["accuracy"] == pytest.approx(0.7)


def test_subgroups_get_the_headline_from_the_same_sums_and_partition_the_patients():
    from federation.tasks.metrics import subgroup_metrics

    task = TASKS["heart-disease/v1"]
    model = task.build_model()
    old, young = {"age": 70.0, "sex": 0}, {"age": 30.0, "sex": 1}
    features = np.zeros((1, 13), np.float32)
    labels = np.ones(1, np.float32)
    sums = {name: task.patient_release_sums(model, features, labels, record)
            for name, record in (("a", old), ("b", young))}
    assert set(sums["a"]) == set(task.release_bounds)
    assert sums["a"]["sex=female/examples"] == 1 and sums["a"]["sex=male/examples"] == 0
    assert sums["a"]["age band=60 and over/examples"] == 1 and sums["b"]["age band=under 45/examples"] == 1
    groups = subgroup_metrics(task, sums)
    assert set(groups) == {"sex", "age band"} and set(groups["age band"]) == {"under 45", "45-59", "60 and over"}
    assert groups["sex"]["female"]["accuracy"] == groups["sex"]["male"]["accuracy"]  # same model, same example
    assert groups["age band"]["45-59"] == {}  # nobody in it
    assert len(task.release_partitions) == len(task.evaluation_partitions) + 2
