"""The tutorial's four architectures as pure torch modules (no Ray), corrected.

Corrections over the tutorial: models return logits (the loss applies sigmoid/softmax itself, so
softmax is never applied twice), and widths, depth and dropout are arguments so Tune can search them.
Initialisation follows the tutorial: He (Kaiming) uniform for ReLU layers, Xavier otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from raylife.catalog import user_code
from raylife.config import Hyperparams
from raylife.errors import RaylifeError

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _linear(n_in: int, n_out: int, activation: str | None) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    if activation == "relu":
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _dense_stack(
    n_in: int, hidden_sizes: Sequence[int], activation: str, dropout: float
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [_linear(n_in, width, activation), _ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = width
    return layers


class MLP(nn.Module):
    """Fully connected network: in_features -> hidden_sizes... -> out_features logits."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_sizes: Sequence[int] = (10, 8),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        body = _dense_stack(in_features, hidden_sizes, activation, dropout)
        self.net = nn.Sequential(*body, _linear(hidden_sizes[-1], out_features, None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Conv(3x3)+ReLU+MaxPool(2) blocks, then a fully connected head to class logits.

    The tutorial's network is conv_channels=(32, 32), hidden_sizes=(100,), 28x28 single-channel input.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_features: int,
        conv_channels: Sequence[int] = (32, 32),
        hidden_sizes: Sequence[int] = (100,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels, size = in_channels, image_size
        for out_channels in conv_channels:
            conv = nn.Conv2d(channels, out_channels, kernel_size=3)
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
            blocks += [conv, nn.ReLU(), nn.MaxPool2d(2)]
            channels, size = out_channels, (size - 2) // 2
        if size < 1:
            raise RaylifeError(
                f"{len(conv_channels)} conv blocks shrink a {image_size}px image to nothing; use fewer"
            )
        head = _dense_stack(channels * size * size, hidden_sizes, "relu", dropout)
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(), *head, _linear(hidden_sizes[-1], out_features, None)
        )
        # Channels-last convolutions: oneDNN's CPU kernels run them 1.2x (batch 64) to 1.4x
        # (batch 32) faster per training step on one thread (`raylife bench --sections trials`
        # shows the MNIST epoch). The weights keep the layout through load_state_dict and .to().
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # free for one channel
        return self.classifier(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN}


def build_model(architecture: str, model_args: dict[str, Any]) -> nn.Module:
    """Rebuild a module from the (architecture, model_args) pair that artifacts carry: a built-in
    class, or a user factory `package.module:function` called with the run's Hyperparams, the
    input shape and the output count (raylife.catalog.user_code finds it)."""
    if ":" in architecture:
        return _from_factory(architecture, model_args)
    if architecture not in ARCHITECTURES:
        raise RaylifeError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](**model_args)


def _from_factory(factory: str, model_args: dict[str, Any]) -> nn.Module:
    build = user_code.load_factory(factory)
    hp = Hyperparams.from_dict(model_args["hyperparameters"])
    try:
        module = build(hp, list(model_args["input_shape"]), int(model_args["n_outputs"]))
    except Exception as exc:  # the user's code: name it, with its own message
        raise RaylifeError(
            f"factory {factory!r} raised {type(exc).__name__}: {exc}; fix the factory"
        ) from exc
    if not isinstance(module, nn.Module):
        raise RaylifeError(
            f"factory {factory!r} returned {type(module).__name__}, not a torch.nn.Module; "
            "return the model"
        )
    return module
