"""An overhead cut of `twinledger bench overhead` in node/trainer.py: empty Poisson batches are noise-only steps."""

import warnings

import numpy as np
import pytest
import torch

from federation.tasks.heart_disease import HeartDiseaseTask
from node.trainer import steps_per_epoch, train_private


@pytest.mark.slow
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
