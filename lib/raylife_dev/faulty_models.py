"""Challengers that misbehave on purpose, for the rollout tests and the rollout bench: user
factories (`raylife_dev.faulty_models:failing`, `...:slow`) that a stored version names like any
user's model, so the product serves them through its ordinary path and no switch in the request
path exists for tests. A Serve replica on this machine imports this module from the editable dev
install (the artifact records its source and sha256, as for any factory: raylife.catalog.user_code).
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from raylife.catalog import user_code
from raylife.catalog.architectures import MLP, build_model
from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig, Hyperparams, TrainConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.errors import RaylifeError
from raylife.lifecycle.artifact import Artifact
from raylife.tasks import Task
from raylife.training.loop import fit, make_loader, make_optimizer, seed_everything
from raylife.training.train import make_artifact

SLOW_S = 0.02
"""What each forward pass of `slow` sleeps: >= 10x a champion's in-replica median of 1-2 ms (the
rollout bench measured 0.64 ms for iris), far above the latency gate's 2x + 1 ms (serve.canary.Gates)."""
FAILURE = "test fault: this challenger fails"


class Failing(nn.Module):
    """Every forward pass raises: a replica answers 500, the canary's 5xx gate sees it (export
    raises too, so the version is served eagerly)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(FAILURE)


class Slow(nn.Module):
    """An MLP over the flattened input that first sleeps SLOW_S (blocking, as slow compute does).

    It refuses torch.export: registration exports a factory's module (raylife.lifecycle.exported),
    and the graph would keep the MLP but drop the sleep, a Python side effect; refused, the version
    records why and is served eagerly, sleep included."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            raise RuntimeError("the slow test model is served eagerly (its sleep is Python)")
        time.sleep(SLOW_S)
        return self.inner(x)


def failing(hyperparameters: Hyperparams, input_shape: list[int], n_outputs: int) -> nn.Module:
    return Failing()


def slow(hyperparameters: Hyperparams, input_shape: list[int], n_outputs: int) -> nn.Module:
    hp = hyperparameters
    mlp = MLP(math.prod(input_shape), n_outputs, hp.hidden_sizes, hp.activation, hp.dropout)
    return Slow(nn.Sequential(nn.Flatten(), mlp))


KINDS = {"failing": failing, "slow": slow}


def faulty_artifact(model: str, kind: str) -> Artifact:
    """A version of `model` (its input schema, label names and preprocessing, so it may stand
    beside the champion) whose architecture is the factory `kind`; `slow` is trained with the
    model's default hyperparameters (its answers as good as a champion's: only latency differs)."""
    if kind not in KINDS:
        raise RaylifeError(f"unknown faulty model {kind!r}; choose one of: {', '.join(KINDS)}")
    factory = f"{__name__}:{kind}"
    spec = dataclasses.replace(get_spec(model), architecture=factory)
    cfg = TrainConfig(model=model, hparams=spec.defaults)
    data = prepare(spec, DataConfig())
    n_outputs = spec.task_obj.output_size(len(data.label_names or []))
    model_args = spec.model_args(cfg.hparams, data.schema.shape, n_outputs)
    seed_everything(cfg.seed)
    module = build_model(factory, model_args)
    if isinstance(module, Slow):
        _train(module.inner, cfg, data, spec.task_obj)  # the MLP inside, not the sleep
    artifact = make_artifact(cfg, data, module, history=[], metrics={}, run_name=f"faulty-{kind}")
    return dataclasses.replace(
        artifact, architecture=factory, model_args=model_args, code=user_code.record(factory)
    )


def _train(module: nn.Module, cfg: TrainConfig, data: PreparedData, task: Task) -> None:
    """The plain loop on one torch thread: on a busy 2-core machine a second thread made iris's
    100 epochs 2.5x slower (13 s against 5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = make_optimizer(cfg.hparams, module.parameters())
        loader = make_loader(data.train, task, cfg.hparams.batch_size, cfg.seed)
        for _ in fit(module, loader, task, optimizer, cfg.hparams):
            pass
    finally:
        torch.set_num_threads(threads)
