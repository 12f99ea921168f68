"""Local training with DP-SGD (Opacus) and plain evaluation."""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class TrainingResult:
    state: dict[str, torch.Tensor]
    steps_taken: list[tuple[float, float, int]]  # (noise multiplier, sample rate, steps) per the accountant
    mean_loss: float


def _loader(
    features: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int | None, shuffle: bool
) -> tuple[DataLoader, torch.Generator | None]:
    """A loader over the examples (batches no larger than the data set) and its seeded generator."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    dataset = TensorDataset(torch.from_numpy(features), torch.from_numpy(labels))
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=shuffle, generator=generator)
    return loader, generator


def train_private(
    model: torch.nn.Module,
    loss_fn,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    max_grad_norm: float,
    noise_multiplier: float,
    seed: int | None = None,
    sensitivity_bound: float = 1.0,
) -> TrainingResult:
    """DP-SGD with Poisson sampling; the privacy spending is read back from Opacus's accountant.

    `noise_multiplier` is the one the privacy account is charged for: noise sd over the sensitivity of the
    clipped gradient sum. For a task whose loss couples patients that sensitivity is `sensitivity_bound` times
    the clipping norm (federation/tasks/base.py), so Opacus adds noise_multiplier * sensitivity_bound times the
    clipping norm, and its accountant's history is divided back by the bound."""
    if not (math.isfinite(sensitivity_bound) and sensitivity_bound >= 1.0):
        raise ValueError(f"a sensitivity bound is at least 1 (times the clipping norm), got {sensitivity_bound!r}")
    from opacus import PrivacyEngine

    loader, generator = _loader(features, labels, batch_size=batch_size, seed=seed, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    if seed is None:
        # Opacus's secure mode needs torchcsprng, which does not build against this PyTorch. Its secure code
        # paths still run: Poisson sampling and noise from `secure_rng`, noise drawn four times against
        # floating-point attacks. The generator is PyTorch's, seeded with 63 bits of the OS CSPRNG per call
        # (docs/privacy.md says what that does and does not give).
        engine.secure_mode = True
        engine.secure_rng = torch.Generator().manual_seed(secrets.randbits(63))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure_mode; fine for this workload
        private_model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier * sensitivity_bound,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=generator,
        )
    losses = []
    private_model.train()
    for _ in range(epochs):
        for batch_features, batch_labels in loader:
            optimizer.zero_grad()
            loss = loss_fn(private_model(batch_features), batch_labels)
            # Poisson sampling can draw an empty batch: it is still a step (noise only, counted by the
            # accountant), and Opacus needs the backward pass to see its empty per-example gradients.
            loss.backward()
            optimizer.step()
            if len(batch_labels):
                losses.append(loss.item())
    # The wrapped module shares its parameters with `model`, whose state dict has no `_module.` prefix.
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    steps_taken = [(sigma / sensitivity_bound, rate, steps) for sigma, rate, steps in engine.accountant.history]
    return TrainingResult(state, steps_taken, float(np.mean(losses)) if losses else float("nan"))


def train_plain(
    model: torch.nn.Module,
    loss_fn,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int | None = None,
) -> TrainingResult:
    """Plain mini-batch SGD, no clipping and no noise: only for studies recorded as non-private."""
    loader, _ = _loader(features, labels, batch_size=batch_size, seed=seed, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    losses = []
    model.train()
    for _ in range(epochs):
        for batch_features, batch_labels in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(batch_features), batch_labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return TrainingResult(state, [], float(np.mean(losses)) if losses else float("nan"))


def steps_per_epoch(n_examples: int, batch_size: int) -> tuple[float, int]:
    """Opacus's Poisson sampling: sample rate 1/len(loader) and len(loader) steps per epoch."""
    batches = max(1, -(-n_examples // min(batch_size, n_examples)))
    return 1.0 / batches, batches


@torch.no_grad()
def evaluate(model: torch.nn.Module, loss_fn, features: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    """(correct predictions at threshold 0.5, summed loss)."""
    model.eval()
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    logits = model(x).reshape(-1)
    correct = int(((logits > 0).float() == y).sum())
    return correct, float(loss_fn(logits, y)) * len(y)
