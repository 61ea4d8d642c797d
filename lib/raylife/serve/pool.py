"""The model pool: any declared model's promoted version, loaded on first use into a replica and
evicted least-recently-used beyond a budget, so replica processes no longer grow with models.

One replica holds many ModelEndpoints (raylife.serve.endpoint): each answers exactly the API a
dedicated app answers, because it is the same object. What the pool adds:
- a **budget** per replica, in models and in bytes of weights: loading past it evicts the least
  recently used; a model that alone exceeds the bytes budget is refused with one line naming it;
- **bounded loads**: at most `max_concurrent_loads` at a time, and one load per model however many
  requests wait for it, so a storm of cold requests queues instead of taking the replica down;
- **failures are per model**: an artifact that fails its checksum answers 503 with the reason
  (retried after FAILURE_RETRY_S), and every other model keeps serving;
- **names are checked first**: an unknown model is a 404 naming the known ones, and no load is
  ever attempted on a path built from an unchecked id.
Nothing here knows Ray: serve_apps/pool.py is the Serve deployment around it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raylife.errors import RaylifeError
from raylife.serve.endpoint import ModelEndpoint
from raylife.serve.endpoint_config import EndpointConfig

FAILURE_RETRY_S = 10.0
"""A model whose load failed answers 503 with the reason for this long before the next try."""
EVICTED_CLOSE_S = 30.0
"""An evicted model's capture writer is closed after this grace (requests may still hold it)."""


@dataclass(frozen=True)
class Budget:
    max_models: int = 32
    """Models one replica keeps loaded."""
    max_bytes: int = 1 << 30
    """Bytes of weights one replica keeps loaded (champions and challengers)."""
    max_concurrent_loads: int = 2
    """Loads from the store at once; more cold requests wait their turn."""


class PoolError(RaylifeError):
    """A request the pool cannot answer: `status` 404 (unknown model) or 503 (cannot load)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ModelPool:
    def __init__(
        self,
        models: list[str],
        budget: Budget,
        load: Callable[[str], ModelEndpoint],
    ) -> None:
        """models: the pooled models (names checked before any load); load(model): a new
        ModelEndpoint of its promoted version (blocking: run in a thread)."""
        self.known = set(models)
        self.budget = budget
        self._load = load
        self.entries: OrderedDict[str, ModelEndpoint] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._loading: dict[str, asyncio.Future[ModelEndpoint]] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self._configs: dict[str, EndpointConfig] = {}
        self._slots: asyncio.Semaphore | None = None
        self.loads = 0
        self.evictions = 0

    def _check(self, model: str) -> None:
        if model not in self.known:
            raise PoolError(
                f"unknown model {model!r}; served: {', '.join(sorted(self.known)) or 'none'}", 404
            )

    async def get(self, model: str) -> ModelEndpoint:
        """The model's endpoint: loaded, or loaded now (once, however many callers wait)."""
        self._check(model)
        entry = self.entries.get(model)
        if entry is not None:
            self.entries.move_to_end(model)
            return entry
        failed = self._failed.get(model)
        if failed is not None and time.monotonic() - failed[0] < FAILURE_RETRY_S:
            raise PoolError(failed[1], 503)
        pending = self._loading.get(model)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[model] = pending
            asyncio.get_running_loop().create_task(self._load_into(model, pending))
        return await asyncio.shield(pending)

    async def _load_into(self, model: str, done: asyncio.Future[ModelEndpoint]) -> None:
        if self._slots is None:  # created on the replica's event loop
            self._slots = asyncio.Semaphore(self.budget.max_concurrent_loads)
        try:
            async with self._slots:
                entry = await asyncio.to_thread(self._load, model)
                config = self._configs.get(model)
                if config is not None:
                    await entry.configure(config)
            self._admit(model, entry)
        except Exception as exc:  # the model's own problem: 503 for it, the others keep serving
            message = str(exc) if isinstance(exc, PoolError) else f"{model} cannot be served: {exc}"
            self._failed[model] = (time.monotonic(), " ".join(message.split()))
            done.set_exception(PoolError(self._failed[model][1], 503))
        else:
            self._failed.pop(model, None)
            done.set_result(entry)
        finally:
            self._loading.pop(model, None)
            if not done.done():
                done.set_exception(PoolError(f"{model}: load interrupted", 503))

    def _admit(self, model: str, entry: ModelEndpoint) -> None:
        size = entry.nbytes()
        if size > self.budget.max_bytes:
            entry.close()
            raise PoolError(
                f"{model} needs {size:,} bytes of weights, more than the pool's budget of "
                f"{self.budget.max_bytes:,} bytes per replica; raise max_bytes or "
                'declare it dedicated ([serve] mode = "dedicated")',
                503,
            )
        while self.entries and (
            len(self.entries) >= self.budget.max_models
            or sum(self._sizes.values()) + size > self.budget.max_bytes
        ):
            self._evict_oldest()
        self.entries[model] = entry
        self._sizes[model] = size
        self.loads += 1

    def _evict_oldest(self) -> None:
        model, entry = self.entries.popitem(last=False)
        self._sizes.pop(model, None)
        self.evictions += 1
        try:
            asyncio.get_running_loop().call_later(EVICTED_CLOSE_S, entry.close)
        except RuntimeError:  # no loop (tests): close now
            entry.close()

    async def configure(self, configs: dict[str, EndpointConfig]) -> None:
        """New per-model settings (promotion, capture, rollout): loaded models take them now,
        the others when they load."""
        unknown = sorted(set(configs) - self.known)
        if unknown:
            raise PoolError(f"settings for models the pool does not serve: {unknown}", 404)
        changed = [m for m, c in configs.items() if self._configs.get(m) != c and m in self.entries]
        self._configs = dict(configs)
        await asyncio.gather(*(self.entries[m].configure(configs[m]) for m in changed))

    def failure(self, model: str) -> str | None:
        """Why `model`'s last load failed, while that still stands."""
        failed = self._failed.get(model)
        return failed[1] if failed else None

    def stats(self) -> dict[str, Any]:
        return {
            "loaded": list(self.entries),
            "bytes": sum(self._sizes.values()),
            "max_models": self.budget.max_models,
            "max_bytes": self.budget.max_bytes,
            "loads": self.loads,
            "evictions": self.evictions,
            "failed": {m: why for m, (_, why) in self._failed.items()},
        }

    def close(self) -> None:
        for entry in self.entries.values():
            entry.close()
