"""Training variants: studies recorded as non-private (fail closed without the node's opt-in), the
coordinator's choice of strategy, and a smoke run of the training benchmark."""

from __future__ import annotations

import math

import pytest
from flwr.serverapp.strategy import FedAdam, FedAvg, FedYogi

from contracts import ledger as lg
from coordinator.run_options import RunOptions, make_strategy
from federation import protocol
from node.consent_gate import Refusal
from node.service import HospitalNode
from node.settings import NodeSettings
from tests.node.hospital import FAR, Hospital, fresh_state


def _non_private_study(chain, hospital: Hospital) -> bytes:
    """A study recorded with epsilon budget NON_PRIVATE_EPSILON, accepted, every patient consenting."""
    study_id = chain.consortium.propose_study(epsilon_budget=protocol.NON_PRIVATE_EPSILON, rounds=2, ends_at=FAR)
    chain.hospital.accept_study(study_id)
    grants = [
        lg.sign_grant(hospital.keys[n], chain.deployment, pseudonym=hospital.pseudonyms[n], study_id=study_id,
                      valid_from=0, valid_until=FAR, nonce=chain.hospital.patient_nonce(hospital.pseudonyms[n]),
                      deadline=FAR)
        for n in hospital.consenting
    ]
    chain.hospital.relay_grants(grants)
    return study_id


@pytest.fixture
def hospital(chain, tmp_path):
    return Hospital(chain, tmp_path / "cleveland")


@pytest.mark.slow  # builds a hospital node on a chain (about 10 s)
def test_refuses_a_non_private_study_without_the_node_opt_in(chain, hospital):
    study_id = _non_private_study(chain, hospital)
    assert not hospital.settings.allow_non_private_studies  # the default
    for work in (hospital.node.train, hospital.node.evaluate):
        with pytest.raises(Refusal) as refusal:
            work(hospital.config(1, study_id=study_id), fresh_state())
        assert refusal.value.code == protocol.STUDY_NOT_ACCEPTED
        assert "non-private" in refusal.value.reason and "allow-non-private-studies" in refusal.value.reason
    assert hospital.store.usage() == []
    assert hospital.store.spends("0x" + study_id.hex()) == []


@pytest.mark.slow  # builds a node and trains (about 10 s)
def test_an_opted_in_node_trains_a_non_private_study_without_noise_and_reports_infinite_epsilon(chain, hospital):
    study_id = _non_private_study(chain, hospital)
    settings = hospital.settings.replace(allow_non_private_studies=True)
    settings.save()
    node = HospitalNode(NodeSettings.load(settings.home), ledger=chain.hospital)
    assert node.settings.allow_non_private_studies
    outcome = node.train(hospital.config(1, study_id=study_id), fresh_state())
    assert math.isinf(outcome.epsilon_spent) and outcome.num_examples > 0
    assert hospital.store.spends("0x" + study_id.hex()) == []  # no DP steps were taken
    (usage,) = hospital.store.usage("0x" + study_id.hex())
    assert usage.phase == "train" and len(usage.pseudonym_list) == outcome.num_examples
    with pytest.raises(Refusal, match="replayed"):
        node.train(hospital.config(1, study_id=study_id), fresh_state())


@pytest.mark.parametrize("name, kind", [("fedavg", FedAvg), ("fedadam", FedAdam), ("fedyogi", FedYogi)])
def test_strategy_is_chosen_by_name(name, kind):
    strategy = make_strategy(RunOptions(study_id=b"\x01" * 32, num_rounds=1, strategy=name, server_learning_rate=0.5))
    assert type(strategy) is kind
    if kind is not FedAvg:
        assert strategy.eta == 0.5


def test_an_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy(RunOptions(study_id=b"\x01" * 32, num_rounds=1, strategy="fedsgd"))


@pytest.mark.slow
def test_training_benchmark_smoke():
    """Every variant once, 2 rounds, one epsilon, on anvil through StudyRun and the ClientApp."""
    from benchmarks.flamby import TrainingSettings
    from benchmarks.training import bench_training

    settings = TrainingSettings(local_epochs=1, dp_local_epochs=1)
    result = bench_training(seeds=1, epsilons=(3.0,), rounds=2, settings=settings, write_docs=False)
    methods = {(row["method"], row["epsilon"]) for row in result["table"]}
    assert {("pooled", None), ("fedavg", None), ("fedavg", 3.0), ("fedadam", 3.0), ("local:cleveland", None)} <= methods
    for key in ("dp3_mean_accuracy", "dp3_pooled_accuracy", "pooled_nonprivate_mean_accuracy",
                "pooled_nonprivate_pooled_accuracy"):
        assert 0 <= result[key] <= 1
    assert 0 < result["epsilon_reported"] <= 3.0 + 1e-9
    assert result["epsilon_agree"] and result["epsilon_recomputed"] > 0
    # At least one DP figure comes from Poisson-subsampled training, and the two accountants agree there too.
    assert result["epsilon_subsampled_checked"] > 0
    assert result["epsilon_subsampled_max_relative_difference"] <= 0.10
    assert result["coordinator_accuracy_mismatches"] == 0
    assert result["train_seconds_missing"] == 0  # each node's train-seconds, recorded per hospital per round


def test_the_split_holds_flambys_published_patient_counts():
    from benchmarks.flamby import load_hospital_data

    data = load_hospital_data()
    counts = {name: (len(d.train_y), len(d.test_y)) for name, d in data.items()}
    assert counts == {"cleveland": (199, 104), "hungary": (172, 89), "switzerland": (30, 16), "va": (85, 45)}


def test_standardiser_uses_the_sample_standard_deviation_like_flamby():
    import numpy as np
    import torch

    from federation.tasks.heart_disease import standardiser

    x = np.array([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]], dtype=np.float32)
    mean, std = standardiser(x)
    assert np.allclose(std[0], torch.from_numpy(x).std(axis=0)[0].item())  # torch's default is unbiased
    assert std[1] == 1.0  # a constant feature is left as it is
    assert np.all(standardiser(x[:1])[1] == 1.0)  # one patient: nothing to divide by


def test_pooled_sets_use_the_pooled_training_statistics():
    import numpy as np

    from benchmarks.flamby import load_hospital_data, pooled_set

    data = load_hospital_data()
    train_x, train_y = pooled_set(data, "train")
    test_x, test_y = pooled_set(data, "test")
    assert len(train_y) == 486 and len(test_y) == 254
    assert np.allclose(train_x.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(train_x.std(axis=0, ddof=1), 1, atol=1e-4)
    # Not the hospitals' own standardisation, which would centre each hospital's training data on its own.
    own = np.concatenate([d.train_x for d in data.values()])
    assert not np.allclose(own, train_x)


@pytest.mark.slow
def test_the_harness_reproduces_flambys_pooled_figures():
    """FLamby's own pooled recipe, FLamby's evaluation: within 0.02 of the published 0.735 / 0.795 (5 seeds)."""
    import statistics

    from benchmarks.flamby import evaluate_model, load_hospital_data, pooled_set, train_flamby_recipe

    data = load_hospital_data()
    x, y = pooled_set(data, "train")
    results = [evaluate_model(train_flamby_recipe(x, y, seed), data) for seed in range(5)]
    assert abs(statistics.fmean(r["mean_accuracy"] for r in results) - 0.735) < 0.02
    assert abs(statistics.fmean(r["pooled_accuracy"] for r in results) - 0.795) < 0.02


def test_overhead_benchmark_parts():
    """The DP step timing and the docs section writer (the full benchmark needs a real deployment)."""
    from benchmarks.overhead import dp_step_times
    from benchmarks.flamby import load_hospital_data

    d = load_hospital_data()["cleveland"]
    times = dp_step_times(d.train_x, d.train_y, steps=20, repeats=1)
    assert times["batch"] == len(d.train_y) and times["dp_step_s"] > 0 and times["plain_step_s"] > 0


def test_overhead_is_registered():
    from benchmarks import BENCHMARKS

    assert {"ledger", "training", "overhead"} <= set(BENCHMARKS)
