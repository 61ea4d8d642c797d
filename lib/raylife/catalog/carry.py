"""A user model travels with its run: the driver packs its declaration and factory code into the
TrainConfig, and each Ray worker or trial unpacks them before it looks the model up.

The four packaged models need nothing (every process imports raylife); for the others, the run's
processes may sit on nodes that have no copy of the user's models folder.
"""

from __future__ import annotations

from typing import Any

from raylife.catalog import lookup, user_code
from raylife.config import TrainConfig


def pack(cfg: TrainConfig) -> TrainConfig:
    """`cfg` carrying its model's declaration and code when they live outside the package."""
    spec = lookup.get_spec(cfg.model)
    if lookup.is_packaged(spec):
        return cfg
    carried: dict[str, Any] = {"declaration": lookup.record(cfg.model)}
    if spec.is_factory:
        carried["code"] = user_code.record(spec.architecture)
    return cfg.replace(carried=carried)


def unpack(cfg: TrainConfig) -> None:
    """Make this process know the model of `cfg` (a no-op for packaged models)."""
    if cfg.carried is None:
        return
    user_code.materialize(cfg.carried.get("code"))
    lookup.adopt(cfg.carried.get("declaration"))
