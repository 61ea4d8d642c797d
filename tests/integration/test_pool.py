"""The model pool on the session's Ray cluster: the bench section at small size (same code as
`raylife bench --sections pool`), and a pool replica killed while it holds models."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from raylife.settings import Settings
from raylife_dev.bench import pool_bench
from tests.integration.conftest import alive_replicas, wait_for


def test_the_pool_section_at_small_size(home: Path) -> None:
    settings = Settings.from_env()
    section = pool_bench.run(settings, quick=True, say=lambda line: None)
    n = pool_bench.setup_for(True).models
    figures = {name: figure.median for name, figure in section.figures.items()}
    assert figures[f"pool ({n} models) replica processes"] <= 3, figures
    assert figures["rotating load non-2xx"] == 0, section.extra["rotating load statuses"]
    assert figures["hot pooled rps"] > 0 and figures["hot dedicated rps"] > 0
    assert set(section.extra["from zero"]) == {"pool", "dedicated"}  # measured, as Ray does it
    # Every figure the issue names is measured (the targets themselves are judged at full size).
    assert {c.name.split(":")[0] for c in section.checks} >= {
        f"{n} models at once",
        "rotating load",
        "cold first request p99 (ms)",
        "hot model",
        "serve start",
    }


def test_a_pool_replica_killed_while_holding_models_comes_back(home: Path) -> None:
    import ray

    settings = Settings.from_env()
    row = {"row": [5.1, 3.5, 1.4, 0.2]}
    with pool_bench.generated_models(settings, 3) as generated:
        models = generated[:3]
        with pool_bench.served(settings, models) as (local, _):
            for model in models:
                assert httpx.post(f"{local.url}/{model}", json=row, timeout=30).status_code == 200
            [victim] = alive_replicas("pool")
            ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
            assert wait_for(
                lambda: [r.actor_id for r in alive_replicas("pool")] not in ([], [victim.actor_id]),
                120,
            ), "Serve did not replace the killed pool replica"
            deadline = time.monotonic() + 60
            answers: list[int] = []
            while time.monotonic() < deadline:
                answers = [
                    httpx.post(f"{local.url}/{m}", json=row, timeout=30).status_code for m in models
                ]
                if answers == [200, 200, 200]:
                    break
                time.sleep(0.5)
            assert answers == [200, 200, 200], answers  # reloaded from the store on demand
