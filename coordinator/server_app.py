"""The coordinator's Flower ServerApp: runs one study's training rounds.

Run config (pyproject.toml [tool.flwr.app.config], overridable with `flwr run --run-config`):
study-id, coordinator-home, run-name, and the training keys of federation.defaults.TRAINING under their
hyphenated names (num-rounds, local-epochs, learning-rate, batch-size, max-grad-norm, min-nodes, round-min-nodes
(hospitals a round after the first needs, default 1),
strategy ("fedavg", "fedadam" or "fedyogi"), server-learning-rate (FedAdam's and FedYogi's eta)), and
secure-aggregation (Flower's SecAgg+ over the updates; true unless set false), and
evaluate-rounds ("last", "all" or round numbers such as "2,5"; coordinator/run_options.py). A key missing from the run config
takes TRAINING's value; min-nodes takes the coordinator's settings' value.
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.exit import add_exit_handler

from contracts.ledger import Ledger
from coordinator import recovery
from coordinator.settings import CoordinatorSettings
from coordinator.run_options import RunOptions
from coordinator.study_run import StudyRun
from federation import monitoring
from federation.defaults import TRAINING
from federation.ids import StudyId
from federation.logs import setup_logging

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
        round_min_nodes=int(config.get("round-min-nodes", 1)),
        wait_for_nodes_s=settings.wait_for_nodes_s,
        strategy=str(config["strategy"]),
        server_learning_rate=float(config["server-learning-rate"]),
        confirmations=settings.confirmations,
        secure_aggregation=str(config.get("secure-aggregation", True)).lower() not in ("false", "0", "no"),
        evaluate_rounds=str(config.get("evaluate-rounds", "last")),
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    setup_logging()  # one line format, no colour codes, no line per poll of the SuperLink (federation/logs.py)
    config = dict(context.run_config)
    settings = CoordinatorSettings.load(str(config["coordinator-home"]))
    options = run_options(config, settings)
    run_dir = settings.runs_dir / str(config.get("run-name", "") or f"run-{context.run_id}")
    try:
        grid = recovery.WatchedGrid(grid)  # how long the SuperLink leaves a request unanswered (watch_superexec)
        run = StudyRun(grid, Ledger.from_settings(settings, key_file=settings.key_file), options, run_dir)
    except Exception as exc:  # the chain, the key or the study could not be read: the run never started
        recovery.write_failed(run_dir, f"the run could not start: {exc}")
        raise
    recovery.claim(run_dir)
    # Signalled (the SuperLink or SuperExec stopped, flwr stop), Flower runs its exit handlers and then raises
    # SystemExit here; the report is final before either.
    add_exit_handler(lambda: end_on_exit(run), run_before_force_exit=True)
    watching = watch_superexec(run)
    try:
        run.run()
    except BaseException as exc:
        cause = recovery.stopped_cause(exc)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            end_now(run, cause)
        elif run.fail(cause):
            monitoring.round_ended(completed=False)  # the round the run stopped in (or before)
        raise
    finally:
        watching.set()
        recovery.release(run_dir)
    log.info("run finished; report at %s", run.report_path)


def end_on_exit(run: StudyRun) -> None:
    """Flower's exit handler: a run still "running" when the ServerApp is made to exit ends with a report."""
    end_now(run, recovery.stopped_cause(SystemExit()))


def watch_superexec(run: StudyRun):
    """End the run with a final report the moment the ServerApp's SuperExec dies (the SuperLink is gone with it),
    or a request to the SuperLink goes unanswered for longer than the round timeout (it hangs), whatever the main
    thread is blocked on (recovery.watch_parent). The event it returns stops the watch."""
    unresponsive = (recovery.superlink_unresponsive(run.grid, timeout_s=run.options.round_timeout_s)
                    if isinstance(run.grid, recovery.WatchedGrid) else lambda: None)
    return recovery.watch_parent(lambda cause: end_now(run, cause), also=unresponsive)


def end_now(run: StudyRun, cause: str) -> None:
    """The run's final report, if it has none yet: `cause`, the round cut, the rounds that stay anchored."""
    if run.fail(recovery.ended_message(run.report, cause)):  # the watch thread and the main thread may both try
        monitoring.round_ended(completed=False)  # the round the run stopped in (or before), counted once
    recovery.release(run.run_dir)
