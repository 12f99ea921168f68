"""The federated glucose forecaster across hospitals' virtual patients, through the real code path.

    from benchmarks.twin_federation import federated_forecaster_rmse_30min_mgdl
    federated_forecaster_rmse_30min_mgdl()          # the 30-min RMSE (mg/dL) of the federated model

What runs: anvil with the contracts; three hospital nodes (`node/`), each with its own virtual patients
(`node/twins/cohort.py`: disjoint parameter sets, several lives each, `days` days with meals, pump and
CGM noise), written as twins' CSV files and imported by the node's importer; every patient enrolled and
consenting on chain to one study of task glucose-forecast/v1; the coordinator's `StudyRun` drives the
nodes' ClientApp over the in-process transport of the training benchmark (`benchmarks.grid.InProcessGrid`:
Flower messages serialised both ways), so the consent gate, the privacy budget (patient-level DP-SGD,
see federation/tasks/glucose_forecast/task.py), the usage log and the round anchors are all the real ones.

Held out: at each hospital, `held_out_sets` parameter sets (all their lives) never train; the nodes
hold only their last `held_out_days` days, as test patients. The RMSE is what the coordinator
aggregated from the nodes' evaluation of the final model on those days, and the baseline (last value
carried forward) is computed on the same windows.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from contracts import ledger as lg
from coordinator.run_options import RunOptions
from coordinator.study_run import StudyRun
from deploy.consortium import Consortium, chain_url
from federation.tasks import get_task
from node.twins.cohort import DAY_MIN, hospital_cohorts, write_records

log = logging.getLogger("twinledger.bench")
TASK_ID = "glucose-forecast/v1"


@dataclass
class ForecasterSettings:
    hospitals: tuple[str, ...] = ("alpha", "beta", "gamma")
    days: int = 5
    held_out_days: int = 1
    lives_per_parameter_set: int = 3
    held_out_sets: int = 2  # parameter sets per hospital whose patients never train
    rounds: int = 5
    epsilon: float = 3.0
    delta_exponent: int = 5
    local_epochs: int = 1
    learning_rate: float = 0.3
    batch_size: int = 1024  # larger than any hospital's patients: full batches, sample rate 1
    max_grad_norm: float = 0.5
    seed: int = 1


def run_federated_forecaster(settings: ForecasterSettings | None = None, *, rpc_url: str | None = None,
                             workdir: Path | None = None, model_out: Path | None = None) -> dict:
    """One study of the forecaster, end to end; returns the figures (see the module docstring). With
    `model_out`, the final global model's state dict is saved there (torch.save), e.g. for the twins'
    forecasts (federation.tasks.glucose_forecast.forecast_mgdl)."""
    settings = settings or ForecasterSettings()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="twinledger-forecaster-") as scratch:
        work = Path(workdir or scratch)
        with chain_url(rpc_url, log_path=work / "anvil.log") as url:
            return _run(settings, work, url, started, model_out)


def _run(settings: ForecasterSettings, work: Path, rpc_url: str, started: float, model_out: Path | None) -> dict:
    consortium = Consortium.deploy(lg.connect(rpc_url), rpc_url=rpc_url, deployment_file=work / "deployment.json",
                                   operator_key_file=work / "operator.key")
    coordinator = consortium.add_coordinator(key_file=work / "coordinator.key")
    study_id = consortium.propose_study(task_id=TASK_ID, epsilon_budget=settings.epsilon,
                                        delta_exponent=settings.delta_exponent, rounds=settings.rounds)

    sim_started = time.monotonic()
    cohorts = hospital_cohorts(list(settings.hospitals), days=settings.days, seed=settings.seed,
                               lives_per_parameter_set=settings.lives_per_parameter_set)
    simulated_s = time.monotonic() - sim_started
    train_days = settings.days - settings.held_out_days
    homes, counts, held_out_records = {}, {}, []
    for name, records in cohorts.items():
        held_out = settings.held_out_sets * settings.lives_per_parameter_set  # records come grouped by parameter set
        test = [r.window(train_days * DAY_MIN, settings.days * DAY_MIN) for r in records[:held_out]]
        train = [r.window(0, train_days * DAY_MIN) for r in records[held_out:]]
        node = consortium.add_node(name, work / "nodes" / name, records=[
            (write_records(train, work / f"{name}-train.csv"), "train"),
            (write_records(test, work / f"{name}-test.csv"), "test"),
        ])
        node.accept(study_id)
        node.enrol()
        node.consent(study_id)
        homes[name], counts[name] = node.settings.home, {"train": len(train), "test": len(test)}
        held_out_records += [r.to_clinical() for r in test]
    set_up_s = time.monotonic() - started

    from .grid import InProcessGrid  # the benchmarks' in-process Flower transport

    options = RunOptions(
        study_id=study_id, num_rounds=settings.rounds, local_epochs=settings.local_epochs,
        learning_rate=settings.learning_rate, batch_size=settings.batch_size, max_grad_norm=settings.max_grad_norm,
        min_nodes=len(homes), wait_for_nodes_s=0, seed=settings.seed,
        strategy="fedavg",  # the forecaster's figures (docs/twins.md) were tuned with FedAvg
    )
    grid = InProcessGrid({i: home for i, home in enumerate(homes.values(), start=1)})
    run = StudyRun(grid, coordinator, options, work / "runs" / "forecaster")
    torch.manual_seed(settings.seed)  # the nodes' Poisson sampling and noise draw from this process's generator
    arrays = run.run()
    if model_out is not None:
        Path(model_out).parent.mkdir(parents=True, exist_ok=True)
        torch.save(arrays.to_torch_state_dict(), model_out)
    report = run.report
    errors = {r.round: r.errors for r in report.rounds if r.errors}
    if errors:
        raise RuntimeError(f"the forecaster study had errors: {errors}")
    # The nodes' evaluation sums are a noisy DP release (issue 13): the final model's figures are computed here,
    # on the held-out records the benchmark holds, as the heart-disease benchmark does.
    task = get_task(TASK_ID)
    model = task.build_model()
    model.load_state_dict(arrays.to_torch_state_dict())
    final = task.summarise(task.evaluation_sums(model, *task.evaluation_examples(held_out_records)))
    return {
        "task": TASK_ID,
        "federated_rmse_30min_mgdl": round(final["rmse_30min_mgdl"], 2),
        "baseline_last_value_rmse_30min_mgdl": round(final["rmse_30min_lvcf_mgdl"], 2),
        # per round as the coordinator pooled the nodes' noisy sums (None: the noisy count was below 1)
        "rmse_30min_mgdl_per_round": [None if r.metrics.get("rmse_30min_mgdl") is None
                                      else round(r.metrics["rmse_30min_mgdl"], 2) for r in report.rounds],
        "test_windows": int(final["windows"]),
        "epsilon_budget": settings.epsilon,
        "epsilon_spent": {h.name: h.epsilon_spent for h in report.hospitals},
        "dp_unit": "patient",
        "patients": counts,
        "days": settings.days,
        "held_out_days": settings.held_out_days,
        "rounds": settings.rounds,
        "anchored_rounds": sum(1 for r in report.rounds if r.anchor_block is not None),
        "simulation_s": round(simulated_s, 2),
        "set_up_s": round(set_up_s, 2),
        "total_s": round(time.monotonic() - started, 2),
    }


def federated_forecaster_rmse_30min_mgdl(settings: ForecasterSettings | None = None, *, rpc_url: str | None = None) -> float:
    """The 30-minute RMSE (mg/dL) of the federated DP forecaster on held-out days of held-out patients.
    `run_federated_forecaster` gives the baseline (last value carried forward) and the rest beside it."""
    return run_federated_forecaster(settings, rpc_url=rpc_url)["federated_rmse_30min_mgdl"]


if __name__ == "__main__":
    import json

    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run_federated_forecaster()))
