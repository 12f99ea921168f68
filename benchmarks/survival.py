"""Survival benchmark (breast-cancer-survival/v1, GBSG2 across three hospitals): the non-private pooled baselines
beside the federated DP study that `twinledger study run --task breast-cancer-survival/v1` ran.

    twinledger bench survival --json                     # the baselines only
    python -m benchmarks.survival demo-run/report.json  # and the study's figures (from the checkout)

Every figure uses the nodes' own split (each hospital's file split by the task's `split_cohorts`) and the task's
features. Baselines (this process holds the data; nothing private): a Cox model (lifelines `CoxPHFitter`, the
usual survival baseline; its partial likelihood couples patients, so it cannot be trained with DP-SGD here) and
the task's discrete-time hazard model fitted by full-batch Adam on the pooled training patients; exact Harrell's
C on the pooled test patients, and the task's binned C with its stated error bound. From a study's report: the
concordance index the nodes released (noisy, DP) per round, and the exact C of its final global model
(coordinator's model.pt) on the pooled test patients, computed here.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from federation.tasks import get_task
from federation.tasks.data_path import demo_records

TASK_ID = "breast-cancer-survival/v1"


def _split(task, scratch: Path) -> tuple[list[dict], list[dict]]:
    train, test = [], []
    for rows in demo_records(task, scratch).values():
        for record, cohort in zip(rows, task.split_cohorts(rows)):
            (test if cohort == "test" else train).append(record)
    return train, test


def _c_indices(task, model, test: list[dict]) -> dict:
    from federation.tasks.breast_cancer_survival.concordance import harrell_concordance
    from federation.tasks.breast_cancer_survival.task import event_risk

    x, y = task.examples(test)
    with torch.no_grad():
        risk = event_risk(model(torch.from_numpy(x))).numpy()
    summary = task.summarise(task.evaluation_sums(model, x, y))
    exact = harrell_concordance(risk, [r["time_days"] for r in test], [r["event"] for r in test])
    return {"c_index": round(exact, 3), "c_index_binned": round(summary["c_index"], 3),
            "binning_bound": round(summary["c_index_error_bound"], 3)}


def bench_survival(report: str | None = None, seed: int = 0) -> dict:
    import pandas as pd
    from lifelines import CoxPHFitter

    task = get_task(TASK_ID)
    with tempfile.TemporaryDirectory() as scratch:
        train, test = _split(task, Path(scratch))
    x, y = task.examples(train)
    torch.manual_seed(seed)
    model = task.build_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        task.loss(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        optimiser.step()
    pooled = _c_indices(task, model, test)

    columns = [f"x{i}" for i in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=columns).assign(time=[r["time_days"] for r in train], event=[r["event"] for r in train])
    cox = CoxPHFitter(penalizer=0.01).fit(frame, "time", "event")
    x_test, _ = task.examples(test)
    from federation.tasks.breast_cancer_survival.concordance import harrell_concordance

    cox_c = harrell_concordance(cox.predict_partial_hazard(pd.DataFrame(x_test, columns=columns)).to_numpy(),
                                [r["time_days"] for r in test], [r["event"] for r in test])
    result = {"task": TASK_ID, "train_patients": len(train), "test_patients": len(test),
              "test_events": int(sum(r["event"] for r in test)), "pooled_cox_c_index": round(cox_c, 3),
              **{f"pooled_hazard_{k}": v for k, v in pooled.items()}}
    if report:
        result.update(_study(task, Path(report), test))
    return result


def _study(task, report_path: Path, test: list[dict]) -> dict:
    """The study's released (noisy) C-index per round and its final model's exact C here."""
    report = json.loads(report_path.read_text())
    rounds = report["rounds"]
    figures = {"study_epsilon": report["study"]["epsilon_budget"], "study_rounds": len(rounds),
               "study_released_c_index": [None if r["metrics"].get("c_index") is None else round(r["metrics"]["c_index"], 3)
                                          for r in rounds],
               "study_released_bound": [None if r["metrics"].get("c_index_error_bound") is None
                                        else round(r["metrics"]["c_index_error_bound"], 3) for r in rounds],
               "study_audit_violations": (report.get("audit") or {}).get("violations")}
    weights = report_path.parent / "coordinator" / "runs" / "demo" / "model.pt"
    if weights.exists():
        model = task.build_model()
        model.load_state_dict(torch.load(weights))
        figures.update({f"study_final_model_{k}": v for k, v in _c_indices(task, model, test).items()})
    return figures


if __name__ == "__main__":
    print(json.dumps(bench_survival(sys.argv[1] if len(sys.argv) > 1 else None)))
