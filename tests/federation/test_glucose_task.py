"""The glucose forecaster as a plug-in: trained and evaluated by the node's own code path, through the
consent gate, the privacy budget and the usage log, on the in-process chain."""

from __future__ import annotations

import math
import secrets
import time

import numpy as np
import pytest
import torch
from eth_account import Account

from contracts import ledger as lg
from federation import protocol
from federation.ids import Pseudonym, StudyId, hex0x
from federation.protocol import RoundConfig
from federation.tasks import get_task
from federation.tasks.base import add_sums
from federation.tasks.glucose_forecast import GlucoseForecastTask
from node import admin
from node.consent_gate import Refusal
from node.service import HospitalNode
from node.store import Store
from node.twins.cohort import simulate_patients, split_days, write_records

FAR = int(time.time()) + 365 * 24 * 3600
TASK = "glucose-forecast/v1"


@pytest.fixture(scope="module")
def twins():
    return simulate_patients(["adult#001", "adult#002", "adolescent#003", "child#004", "adult#005"], days=2, seed=11)


class DiabetesHospital:
    """Four training patients (one of them refuses consent) and one test patient, plus heart-disease patients
    that the glucose task must never read."""

    def __init__(self, chain, home, twins):
        self.chain = chain
        self.settings = admin.init_node(home, hospital="alpha", rpc_url="unused", deployment_file=None)
        admin.import_records(self.settings, write_records(twins[:4], home / "train.csv"), cohort="train")
        admin.import_records(self.settings, write_records([split_days(twins[4], first_day=1, days=1)],
                                                          home / "test.json", format="fhir"), cohort="test")
        heart = home / "heart.csv"
        heart.write_text("63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n67,1,4,160,286,0,2,108,1,1.5,2,3,3,2\n"
                         "37,1,3,130,250,0,0,187,0,3.5,3,0,3,0\n41,0,2,130,204,0,2,172,0,1.4,1,0,3,0\n")
        admin.import_records(self.settings, heart)
        self.store = Store(self.settings.resolved_database_url)
        self.study = StudyId.new()
        chain.operator.propose_study(self.study, purpose="HRESCH", task_id=TASK, epsilon_budget=3.0, delta_exponent=5,
                                     rounds=3, ends_at=FAR)
        chain.hospital.accept_study(self.study)
        patients = self.store.patients()
        self.keys = keys = {p.record_number: hex0x(secrets.token_bytes(32)) for p in patients}
        admin.enrol_patients(self.settings, chain.hospital, {n: Account.from_key(k).address for n, k in keys.items()})
        self.pseudonyms = {p.record_number: Pseudonym.parse(p.pseudonym) for p in patients}
        self.refusing = twins[0].patient_id
        grants = [lg.sign_grant(keys[n], chain.deployment, pseudonym=self.pseudonyms[n], study_id=self.study,
                                valid_from=0, valid_until=FAR, nonce=0, deadline=FAR)
                  for n in keys if n != self.refusing]  # the heart-disease patients consent too
        chain.hospital.relay_grants(grants)
        self.node = HospitalNode(self.settings, ledger=chain.hospital)

    def config(self, round_number: int, study: bytes | None = None) -> RoundConfig:
        return RoundConfig(study_id=study or self.study, round=round_number, block=self.chain.hospital.block_number(),
                           local_epochs=1, learning_rate=0.3, batch_size=64, max_grad_norm=0.5)

    def hex_of(self, numbers) -> set[str]:
        return {str(self.pseudonyms[n]) for n in numbers}


@pytest.fixture
def hospital(chain, tmp_path, twins):
    return DiabetesHospital(chain, tmp_path / "alpha", twins)


def fresh_state():
    torch.manual_seed(0)
    return get_task(TASK).build_model().state_dict()


@pytest.mark.slow  # a node on a chain with imported twins: 5 to 17 s each
@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_trains_on_consented_diabetes_patients_only(hospital, twins):
    outcome = hospital.node.train(hospital.config(1), fresh_state())
    (usage,) = hospital.store.usage()
    used = set(usage.pseudonym_list)
    assert used == hospital.hex_of(r.patient_id for r in twins[1:4])  # not the refusing one, no heart patient
    # The unit of privacy is the patient, not the window: 3 patients trained (above); the count sent is noisy.
    assert outcome.num_examples >= 1
    assert 0 < outcome.epsilon_spent <= 3.0 and math.isfinite(outcome.mean_loss)
    spend, count = hospital.store.spends(str(hospital.study))
    assert (spend.release, count.release) == ("train", "count")
    assert spend.sample_rate == 1.0  # a batch of 64 covers the 3 patients: each step samples patients
    assert set(outcome.state) == set(fresh_state())


@pytest.mark.slow  # a node on a chain with imported twins: 5 to 17 s each
@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_evaluates_rmse_on_consented_test_patients_without_reading_training_patients(hospital, twins):
    outcome = hospital.node.evaluate(hospital.config(1), fresh_state())
    (usage,) = hospital.store.usage()
    assert set(usage.pseudonym_list) == hospital.hex_of([twins[4].patient_id])
    # What is sent is a noisy release (issue 13); the exact, per-patient-clipped sums it noises:
    assert outcome.num_examples == max(0, round(outcome.sums["windows"])) and outcome.epsilon_spent > 0
    task = GlucoseForecastTask()
    model = task.build_model()
    model.load_state_dict(fresh_state())
    config = hospital.config(2)
    _, _, gate = hospital.node._check(config)
    test = gate.consented(config.study_id, config.block, cohort="test")
    record = gate.open_records(config.study_id, config.block, test, fields=task.fields).records[0]
    exact = HospitalNode._clipped_sums(task, model, [record], *task.normaliser(None))
    metrics = task.summarise(add_sums([exact]))
    # The untrained (zero) model is last value carried forward: the same RMSE as the baseline.
    assert metrics["rmse_30min_mgdl"] == pytest.approx(metrics["rmse_30min_lvcf_mgdl"])
    assert 5 < metrics["rmse_30min_mgdl"] < 60 and exact["windows"] == task.windows_per_patient


@pytest.mark.slow  # a node on a chain with imported twins: 5 to 17 s each
@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_a_study_whose_purpose_is_not_the_tasks_is_refused(chain, hospital):
    other = StudyId.new()
    chain.operator.propose_study(other, purpose="TREAT", task_id=TASK, epsilon_budget=3.0, delta_exponent=5,
                                 rounds=2, ends_at=FAR)
    chain.hospital.accept_study(other)
    with pytest.raises(Refusal) as refusal:
        hospital.node.train(hospital.config(1, study=other), fresh_state())
    assert refusal.value.code == protocol.STUDY_NOT_ACCEPTED and "purpose" in refusal.value.reason
    assert hospital.store.usage() == []


@pytest.mark.slow  # a node on a chain with imported twins: 5 to 17 s each
@pytest.mark.parametrize("chain", ["eth-tester"], indirect=True)
def test_no_consenting_test_patient_fails_closed(chain, hospital, twins):
    pseudonym = hospital.pseudonyms[twins[4].patient_id]  # the only test patient withdraws
    revoke = lg.sign_revoke(hospital.keys[twins[4].patient_id], chain.deployment, pseudonym=pseudonym,
                            study_id=hospital.study, nonce=chain.hospital.patient_nonce(pseudonym), deadline=FAR)
    chain.hospital.relay_revoke(revoke)
    with pytest.raises(Refusal) as refusal:
        hospital.node.evaluate(hospital.config(1), fresh_state())
    assert refusal.value.code == protocol.NO_CONSENTED_PATIENTS
    assert hospital.store.usage() == []


def test_dp_unit_is_the_patient():
    """Opacus gives one clipped gradient per patient (the mean over that patient's windows)."""
    from node.trainer import train_private

    task = GlucoseForecastTask()
    records = [r.to_clinical() for r in simulate_patients(["adult#001", "child#002"], days=1, seed=2)]
    features, labels = task.training_examples(records)
    assert features.shape[:2] == labels.shape == (2, task.windows_per_patient)
    torch.manual_seed(0)
    result = train_private(task.build_model(), task.loss, features, labels, epochs=1, learning_rate=0.1,
                           batch_size=64, max_grad_norm=0.5, noise_multiplier=0.0)
    ((_, sample_rate, steps),) = result.steps_taken
    assert sample_rate == 1.0 and steps == 1
    # Without noise, one step moves the weights by at most lr * max_grad_norm (mean of clipped per-patient grads).
    moved = torch.cat([t.reshape(-1) for t in result.state.values()]).norm().item()
    assert 0 < moved <= 0.1 * 0.5 + 1e-6
    assert np.isfinite(labels).all()


def test_coordinator_sums_give_the_pooled_rmse_and_the_page_shows_it(tmp_path):
    """Sums from two nodes add up to the RMSE of all windows together; the report page names the metric."""
    from coordinator.report_page import write_report_page

    task = GlucoseForecastTask()
    model = task.build_model()
    with torch.no_grad():
        model.weight[0, 1] = 0.5  # some non-trivial forecaster
    records = [r.to_clinical() for r in simulate_patients(["adult#001", "child#002"], days=1, seed=5)]
    per_node = [task.evaluation_sums(model, *task.evaluation_examples([r])) for r in records]
    pooled = task.evaluation_sums(model, *task.evaluation_examples(records))
    assert task.summarise(add_sums(per_node))["rmse_30min_mgdl"] == pytest.approx(task.summarise(pooled)["rmse_30min_mgdl"])
    rmse = task.summarise(pooled)["rmse_30min_mgdl"]
    report = {"study": {"task": TASK, "metric": task.headline.as_dict()}, "hospitals": [{"name": "alpha"}],
              "rounds": [{"round": 1, "metrics": {"rmse_30min_mgdl": rmse}, "used": {"alpha": 3}},
                         {"round": 2, "metrics": {}, "used": {"alpha": 3}}]}
    page = write_report_page(report, tmp_path / "report.json").read_text()
    assert f"{rmse:.1f} mg/dL" in page and "30-min forecast RMSE" in page and "metric.png" in page


def test_forecasts_for_the_twins():
    """What the twins call: the untrained forecaster carries the last value forward, up to the last minute."""
    from federation.tasks.glucose_forecast import decode, forecast_mgdl

    (record,) = simulate_patients(["adult#003"], days=1, seed=9)
    series = decode(record.to_clinical())
    times, forecast = forecast_mgdl(GlucoseForecastTask().build_model(), series)
    assert times[-1] > record.minutes - 10 and len(times) > 200
    known = np.isfinite(series["cgm_mgdl"][times])
    np.testing.assert_allclose(forecast[known], series["cgm_mgdl"][times][known])
    with pytest.raises(ValueError, match="outside"):
        decode({**record.to_clinical(), "minutes": 10})


@pytest.mark.slow  # a federated study end to end (about 6-12 s)
def test_federated_forecaster_smoke():
    """The benchmark's path, small: two hospitals on anvil, StudyRun driving the ClientApp, every round anchored."""
    from benchmarks.twin_federation import ForecasterSettings, run_federated_forecaster

    result = run_federated_forecaster(ForecasterSettings(hospitals=("alpha", "beta"), days=2, lives_per_parameter_set=1,
                                                         held_out_sets=1, rounds=2))
    assert result["anchored_rounds"] == 2 and len(result["rmse_30min_mgdl_per_round"]) == 2
    assert result["patients"] == {"alpha": {"train": 14, "test": 1}, "beta": {"train": 14, "test": 1}}
    assert all(0 < eps <= 3.0 + 1e-9 for eps in result["epsilon_spent"].values())
    assert 5 < result["federated_rmse_30min_mgdl"] < 60 and 5 < result["baseline_last_value_rmse_30min_mgdl"] < 60
    assert result["test_windows"] > 400
