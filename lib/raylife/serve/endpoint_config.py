"""What a running model takes without a restart: a dedicated app's user_config, or one entry of
the model pool's. Its own module (no torch): the Serve controller validates configs with it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from raylife.serve.rollout import Rollout


class EndpointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    promotion: int = Field(
        default=0, description="bump to make replicas reload the promoted version"
    )
    capture: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="fraction of requests captured to <store>/<model>/captures (Parquet); 0: off",
    )
    rollout: Rollout | None = Field(
        default=None, description="a challenger beside the champion (raylife promote --canary)"
    )
