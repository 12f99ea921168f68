"""The coordinator's Flower ServerApp: runs one study's training rounds.

Run config (pyproject.toml [tool.flwr.app.config], overridable with `flwr run --run-config`):
study-id, coordinator-home, run-name, and the training keys of federation.defaults.TRAINING under their
hyphenated names (num-rounds, local-epochs, learning-rate, batch-size, max-grad-norm, min-nodes,
strategy ("fedavg", "fedadam" or "fedyogi"), server-learning-rate (FedAdam's and FedYogi's eta)), and
evaluate-rounds ("last", "all" or round numbers such as "2,5"; coordinator/run_options.py). A key
missing from the run config takes TRAINING's value; min-nodes takes the coordinator's settings' value.
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from contracts.ledger import Ledger
from coordinator.settings import CoordinatorSettings
from coordinator.run_options import RunOptions
from coordinator.study_run import StudyRun
from federation.defaults import TRAINING
from federation.ids import StudyId

app = ServerApp()
log = logging.getLogger("twinledger.coordinator")


def run_options(run_config: dict, settings: CoordinatorSettings) -> RunOptions:
    """The run's options from Flower's run config, with TRAINING's defaults for keys it lacks."""
    config = {**TRAINING.as_run_config(), "min-nodes": settings.min_nodes, **run_config}
    return RunOptions(
        study_id=StudyId.parse(config["study-id"]),  # ValueError naming the study id when malformed
        num_rounds=int(config["num-rounds"]),
        local_epochs=int(config["local-epochs"]),
        learning_rate=float(config["learning-rate"]),
        batch_size=int(config["batch-size"]),
        max_grad_norm=float(config["max-grad-norm"]),
        round_timeout_s=settings.round_timeout_s,
        min_nodes=int(config["min-nodes"]),
        wait_for_nodes_s=settings.wait_for_nodes_s,
        strategy=str(config["strategy"]),
        server_learning_rate=float(config["server-learning-rate"]),
        confirmations=settings.confirmations,
        evaluate_rounds=str(config.get("evaluate-rounds", "last")),
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = dict(context.run_config)
    settings = CoordinatorSettings.load(str(config["coordinator-home"]))
    options = run_options(config, settings)
    ledger = Ledger.from_settings(settings, key_file=settings.key_file)
    run_name = str(config.get("run-name", "") or f"run-{context.run_id}")
    run = StudyRun(grid, ledger, options, settings.runs_dir / run_name)
    try:
        run.run()
    except Exception as exc:
        run.fail(str(exc))
        raise
    log.info("run finished; report at %s", run.report_path)
