"""The overhead cuts of `twinledger bench overhead`: empty Poisson batches, the warm SuperNode launcher."""

import time
import warnings

import numpy as np
import pytest
import torch

from deploy import processes, supernode
from federation.tasks.heart_disease import HeartDiseaseTask
from node.trainer import steps_per_epoch, train_private


def test_empty_poisson_batches_are_noise_only_steps_that_the_accountant_counts():
    task = HeartDiseaseTask()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 13)).astype(np.float32)
    labels = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    sample_rate, batches = steps_per_epoch(3, 1)
    empty_seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(12):  # each step draws an empty batch with probability (2/3)^3
            model = task.build_model()
            before = torch.cat([p.detach().clone().reshape(-1) for p in model.parameters()])
            result = train_private(model, task.loss, features, labels, epochs=3, learning_rate=0.5, batch_size=1,
                                   max_grad_norm=0.5, noise_multiplier=1.0, seed=seed)
            assert result.steps_taken == [(1.0, sample_rate, 3 * batches)]
            after = torch.cat([t.reshape(-1) for t in result.state.values()])
            assert torch.isfinite(after).all() and not torch.equal(before, after)
            empty_seen += int(np.isnan(result.mean_loss))  # every batch of the run empty: no loss to report
    assert empty_seen < 12


def test_idle_poll_is_shortened_only_in_flowers_main_loop(monkeypatch):
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", time)
    assert supernode._shorten_idle_poll(0.01)
    started = time.perf_counter()
    loop.time.sleep(3)
    assert time.perf_counter() - started < 1.0
    assert loop.time.monotonic is time.monotonic
    assert time.sleep is not loop.time.sleep  # the time module itself is untouched


@pytest.mark.parametrize("warm", [True, False])
def test_supernode_command(warm):
    command = processes.supernode_command(warm=warm)
    if warm:
        assert command[-1] == "from deploy.supernode import main; main()"
    else:
        assert command[0].endswith("flower-supernode")


def test_launcher_sets_the_isolation_itself():
    with pytest.raises(SystemExit):
        supernode.main(["--insecure", "--isolation", "subprocess"])
