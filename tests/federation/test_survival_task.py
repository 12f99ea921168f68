"""The survival task (breast-cancer-survival/v1, issue 17): its reader, its per-patient loss, and its concordance
index from additive counts against the exact one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federation.tasks import TASKS
from federation.tasks.breast_cancer_survival.concordance import binned_concordance, harrell_concordance
from federation.tasks.breast_cancer_survival.readers import read_gbsg2_csv
from federation.tasks.breast_cancer_survival.task import INTERVALS, RISK_BINS, person_period_nll
from federation.tasks.data_path import RecordFileError, demo_records

TASK = TASKS["breast-cancer-survival/v1"]
HEADER = "record_number,horTh,age,menostat,tsize,tgrade,pnodes,progrec,estrec,time,cens\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_records(TASK, tmp_path_factory.mktemp("gbsg2"))


def test_gbsg2_is_split_across_three_hospitals_with_every_patient_once(demo):
    assert {name: len(rows) for name, rows in demo.items()} == {"north": 229, "centre": 229, "south": 228}
    assert sum(r["event"] for rows in demo.values() for r in rows) == 299


def test_the_reader_lists_every_bad_cell_and_imports_nothing(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(HEADER + "A1,maybe,56,Post,12,II,7,61,77,2018,1\nA1,yes,56,Post,-3,IV,7,61,77,2018,2\n")
    with pytest.raises(RecordFileError) as raised:
        read_gbsg2_csv(path, "X")
    message = str(raised.value)
    for part in ("line 2: horTh is 'maybe'", "line 3: tsize = -3", "tgrade is 'IV'", "cens is '2'", "appears twice"):
        assert part in message


def test_a_patients_loss_is_their_own_person_period_likelihood():
    logits = torch.zeros(2, INTERVALS)  # hazard 1/2 every year
    labels = torch.tensor([[2.0, 1.0], [2.0, 0.0]])  # event in year 3; censored in year 3
    nll = person_period_nll(logits, labels)
    assert nll.tolist() == pytest.approx([3 * np.log(2), 2 * np.log(2)])


def test_binned_concordance_is_within_its_bound_of_the_exact_one():
    rng = np.random.default_rng(0)
    n = 300
    risk = rng.uniform(size=n)
    time = rng.exponential(1.0 / (0.2 + risk)) * 365 * 2
    event = (rng.uniform(size=n) < 0.6).astype(int)
    interval = np.minimum(time // 365.25, INTERVALS - 1).astype(int)
    bins = np.minimum((risk * RISK_BINS).astype(int), RISK_BINS - 1)
    events, at_risk = np.zeros((INTERVALS, RISK_BINS)), np.zeros((INTERVALS, RISK_BINS))
    np.add.at(at_risk, (interval, bins), 1)
    np.add.at(events, (interval, bins), event)
    c_binned, bound = binned_concordance(events, at_risk)
    exact = harrell_concordance(risk, time, event)
    assert exact > 0.6 and abs(c_binned - exact) <= bound


def test_evaluation_sums_partition_the_patients_and_add_over_hospitals(demo):
    torch.manual_seed(0)
    model = TASK.build_model()
    per_hospital = [TASK.evaluation_sums(model, *TASK.examples(rows)) for rows in demo.values()]
    pooled = TASK.evaluation_sums(model, *TASK.examples([r for rows in demo.values() for r in rows]))
    added = {k: sum(s[k] for s in per_hospital) for k in pooled}
    assert added == pytest.approx(pooled)
    one = TASK.evaluation_sums(model, *TASK.examples(demo["north"][:1]))
    for partition in TASK.evaluation_partitions:
        assert sum(any(one[k] > 0 for k in block) for block in partition) <= 1
    assert set(one) == set(TASK.evaluation_bounds)


def test_fedavg_weighs_a_hospital_by_its_events(demo):
    assert TASK.training_weight(demo["north"]) == sum(r["event"] for r in demo["north"]) < len(demo["north"])
