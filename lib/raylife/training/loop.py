"""The one epoch loop (`fit`) and its plain PyTorch steps.

Every training in raylife runs `fit`: the Ray Train worker (train.py), the benchmark's plain loop,
the selection study's folds and the test helpers. No Ray here, so unit tests and the plain
baseline run exactly the steps a Ray Train worker runs.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from raylife.config import Hyperparams
from raylife.data.contracts import Split
from raylife.tasks import Task

OBJECTIVE = "val_objective"
"""Reported every epoch; checkpoints, Tune trials and promotions are all chosen by it."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def as_tensors(split: Split, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    # A copy: arrays from Ray's object store are read-only.
    X = torch.tensor(split.X, dtype=torch.float32)
    return X, torch.tensor(split.y, dtype=task.target_dtype)


def make_loader(
    split: Split, task: Task, batch_size: int, seed: int, sampler: Sampler | None = None
) -> DataLoader:
    """Shuffled mini-batches; a sampler (DistributedSampler) replaces shuffling when given."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(*as_tensors(split, task)),
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
    )


def make_optimizer(hp: Hyperparams, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
    return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)


def epoch_lr(hp: Hyperparams, epoch: int) -> float:
    """Learning rate of a 1-based epoch. A function of the epoch alone, so a resumed run (and
    every DDP worker) gets the same rate without scheduler state in the checkpoint."""
    if hp.lr_schedule == "cosine":
        return hp.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / hp.epochs))
    return hp.lr


def schedule_lr(optimizer: torch.optim.Optimizer, hp: Hyperparams, epoch: int) -> None:
    """Set the optimizer's rate for this epoch; call before train_epoch."""
    for group in optimizer.param_groups:
        group["lr"] = epoch_lr(hp, epoch)


def train_epoch(
    model: nn.Module, loader: Iterable, task: Task, optimizer: torch.optim.Optimizer
) -> torch.Tensor:
    """One pass over the loader; returns additive batch statistics (see Task.batch_sums)."""
    model.train()
    sums = torch.zeros(4)
    for X, y in loader:
        optimizer.zero_grad(set_to_none=True)
        outputs = model(X)
        loss = task.loss(outputs, y)
        loss.backward()
        optimizer.step()
        sums += task.batch_sums(outputs, y, loss)
    return sums


@dataclass
class Epoch:
    """One finished epoch of `fit`: additive batch statistics (see Task.batch_sums) and times."""

    number: int
    """1-based."""
    train_sums: torch.Tensor
    val_sums: torch.Tensor
    """Statistics on the validation tensors given to fit (zeros when none were)."""
    started: float
    ended: float
    """Wall clock (time.time()) around the epoch's training and validation."""


def fit(
    model: nn.Module,
    loader: Iterable,
    task: Task,
    optimizer: torch.optim.Optimizer,
    hp: Hyperparams,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    start_epoch: int = 1,
) -> Iterator[Epoch]:
    """Epochs start_epoch..hp.epochs: set the epoch's learning rate, one pass over the loader,
    then the validation statistics. A generator, so each caller adds what it needs between
    epochs (Ray Train all-reduces and reports; the selection study scores a held-out fold)."""
    # DistributedSampler: a new shuffle every epoch (plain loaders shuffle by themselves).
    set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
    for epoch in range(start_epoch, hp.epochs + 1):
        if set_epoch is not None:
            set_epoch(epoch)
        started = time.time()
        schedule_lr(optimizer, hp, epoch)
        train_sums = train_epoch(model, loader, task, optimizer)
        val_sums = evaluate(model, *val, task) if val is not None else torch.zeros(4)
        yield Epoch(epoch, train_sums, val_sums, started, time.time())


@torch.no_grad()
def evaluate(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, task: Task, batch_size: int = 2048
) -> torch.Tensor:
    """Batch statistics of the model on (X, y), in eval mode (no dropout)."""
    model.eval()
    sums = torch.zeros(4)
    for start in range(0, len(y), batch_size):
        outputs = model(X[start : start + batch_size])
        target = y[start : start + batch_size]
        sums += task.batch_sums(outputs, target, task.loss(outputs, target))
    return sums


def epoch_metrics(
    epoch: int, train_sums: torch.Tensor, val_sums: torch.Tensor, task: Task, target_std: float
) -> dict[str, float]:
    """The row reported for one epoch (1-based): train_* and val_* metrics, in target units."""
    row: dict[str, float] = {"epoch": epoch}
    row.update({f"train_{k}": v for k, v in task.finalize(train_sums, target_std).items()})
    val = task.finalize(val_sums, target_std)
    row.update({f"val_{k}": v for k, v in val.items()})
    row[OBJECTIVE] = task.objective(val)
    return row
