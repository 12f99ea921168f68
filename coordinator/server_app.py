"""The coordinator's Flower ServerApp: runs one study's training rounds.

Run config (pyproject.toml [tool.flwr.app.config], overridable with `flwr run --run-config`):
study-id, coordinator-home, num-rounds, local-epochs, learning-rate, batch-size, max-grad-norm, run-name,
min-nodes, strategy ("fedavg", "fedadam" or "fedyogi"), server-learning-rate (FedAdam's and FedYogi's eta).
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from contracts.ledger import Ledger
from coordinator.settings import CoordinatorSettings
from coordinator.study_run import RunOptions, StudyRun

app = ServerApp()
log = logging.getLogger("twinledger.coordinator")


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = context.run_config
    settings = CoordinatorSettings.load(str(config["coordinator-home"]))
    study_hex = str(config["study-id"]).removeprefix("0x")
    if len(study_hex) != 64:
        raise ValueError(f"run config study-id must be a 32-byte hex id, got {config['study-id']!r}")
    ledger = Ledger.open(
        settings.rpc_url, settings.deployment_file, key_path=settings.key_file, timeout_s=settings.chain_timeout_s
    )
    run_name = str(config.get("run-name", "") or f"run-{context.run_id}")
    options = RunOptions(
        study_id=bytes.fromhex(study_hex),
        num_rounds=int(config["num-rounds"]),
        local_epochs=int(config["local-epochs"]),
        learning_rate=float(config["learning-rate"]),
        batch_size=int(config["batch-size"]),
        max_grad_norm=float(config["max-grad-norm"]),
        round_timeout_s=settings.round_timeout_s,
        min_nodes=int(config.get("min-nodes", settings.min_nodes)),
        wait_for_nodes_s=settings.wait_for_nodes_s,
        strategy=str(config.get("strategy", "fedavg")),
        server_learning_rate=float(config.get("server-learning-rate", 0.1)),
    )
    run = StudyRun(grid, ledger, options, settings.runs_dir / run_name)
    try:
        run.run()
    except Exception as exc:
        run.report.status = "failed"
        run.report.message = str(exc)
        run.report.save()
        raise
    log.info("run finished; report at %s", run.report.path)
