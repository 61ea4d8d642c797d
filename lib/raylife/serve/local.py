"""Run the Serve applications locally: deploy the rendered config, wait, record, reconfigure, stop.

`raylife serve` deploys through the same REST API `serve deploy` uses (declarative config), so a
promotion is a config update with a new `user_config.promotion`: Serve calls reconfigure() on the
running replicas and nothing restarts. On EKS the same update is an in-place edit of the
RayService's serveConfigV2 (see docs).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylife.catalog.lookup import MODELS_ENV, get_spec, is_packaged, models_dir
from raylife.cluster import free_port
from raylife.errors import RaylifeError
from raylife.lifecycle.store import ModelStore
from raylife.serve import config as serve_config
from raylife.settings import Settings
from raylife.waiting import poll, wait_until

STATE_FILE = "serve.json"
DEFAULT_PORT = 8000
MODEL_DEPLOYMENT = "ModelServer"


@dataclass
class LocalServe:
    """A running local deployment: where to reach it and the config it runs."""

    url: str
    dashboard_url: str
    config: dict[str, Any]
    models: list[str]


def _state_path(settings: Settings) -> Path:
    return settings.home / STATE_FILE


def promoted_models(store: ModelStore, wanted: list[str]) -> list[str]:
    stored = set(store.models())  # one listing, not one per model (on S3 each is a request)
    return [m for m in wanted if m in stored and store.pointer(m) is not None]


def local_config(
    settings: Settings,
    models: list[str],
    port: int,
    host: str,
    env: str = "local",
    batching: bool | None = None,
    num_gpus: float = 0.0,
) -> dict[str, Any]:
    """The rendered `env` config pointed at this store and port, serving exactly `models`."""
    config = serve_config.for_models(serve_config.render(env), models)
    serve_config.point_at(config, _absolute(settings.store_uri), port, host)
    store = ModelStore(settings.store_uri)
    for model, deployment in serve_config.model_deployments(config):
        # Replicas start on the version promoted now; the counter only has to move on promote.
        pointer = store.pointer(model)
        user_config = deployment.setdefault("user_config", {})
        user_config["promotion"] = pointer.generation if pointer else 0
        if isinstance(deployment, serve_config.PooledDeployment):
            continue  # batching and GPUs are a dedicated app's (the pool has neither)
        if batching is not None:
            user_config.setdefault("batching", {})["enabled"] = batching
        if num_gpus:
            deployment.setdefault("ray_actor_options", {})["num_gpus"] = num_gpus
    _user_models_env(config)
    return config


def _user_models_env(config: dict[str, Any]) -> None:
    """Replicas of a user's model find its declaration and factory module in the models folder
    (this machine's: a cluster's image or runtime_env carries it there, docs/catalogue.md)."""
    folder = models_dir()
    if folder is None:
        return
    for app in config["applications"]:
        args = app.get("args") or {}
        models = [args["model"]] if "model" in args else args.get("models", [])
        if any(not is_packaged(get_spec(model)) for model in models):
            env_vars = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
            env_vars[MODELS_ENV] = str(folder)


def _absolute(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def start(
    settings: Settings,
    models: list[str],
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    timeout_s: float = 180.0,
    batching: bool | None = None,
    num_gpus: float = 0.0,
    own_ports: bool = False,
) -> LocalServe:
    """Deploy the promoted versions of `models` on the local (or RAY_ADDRESS) cluster and wait.
    own_ports: see serving_cluster_env (a cluster already running keeps what it has)."""
    # lazy: resolved at call time, so a stand-in for it (tests that prove no cluster starts) is the one called
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from raylife.cluster import dashboard_url, ensure_ray

    store = ModelStore(settings.store_uri)
    serving = promoted_models(store, models)
    if not serving:
        raise RaylifeError(
            f"nothing to serve: none of {', '.join(models)} has a promoted version in "
            f"{settings.store_uri}; run `raylife run` or `raylife promote MODEL VERSION` first"
        )
    config = local_config(settings, serving, port, host, batching=batching, num_gpus=num_gpus)
    ensure_ray(cluster_env=serving_cluster_env(own_ports))
    dashboard = dashboard_url()
    try:
        ServeSubmissionClient(dashboard).deploy_applications(config)
    except RuntimeError as exc:
        raise RaylifeError(
            f"Serve refused the deployment: {_tail(str(exc), 600)}. A process left from an "
            "earlier run may hold a port (check `pgrep -a haproxy`, `ss -ltnp`)"
        ) from exc
    wait_running([app["name"] for app in config["applications"]], timeout_s)
    local = LocalServe(f"http://{_client_host(host)}:{port}", dashboard, config, serving)
    _write_state(settings, local)
    return local


HAPROXY_PORT_VARIABLES = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
"""HAProxy's stats page and Prometheus metrics listeners: fixed ports (8404, 9101) by default."""


def serving_cluster_env(own_ports: bool = False) -> dict[str, str]:
    """What a local cluster that will serve needs in its processes' environment: the `local`
    overlay's cluster_env (Serve's fast paths). Only for clusters started by raylife.

    own_ports: a short-lived cluster (the main job's demo, a load test, the test suite) whose
    HAProxy takes free ports for its stats and metrics listeners. With the fixed ones, a
    `raylife serve` left running made `raylife run` fail at its very end, after every sweep, on
    "cannot bind socket ... 0.0.0.0:9101". `raylife serve` keeps 8404 and 9101, where a
    Prometheus scrape config expects them."""
    env = serve_config.cluster_env("local")
    if own_ports:
        env.update({name: str(free_port()) for name in HAPROXY_PORT_VARIABLES})
    return env


def _tail(text: str, limit: int) -> str:
    """The end of a long message, cut at a line or word boundary (not mid-word)."""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    for boundary in ("\n", " "):
        if boundary in tail:
            return "... " + tail.split(boundary, 1)[1].lstrip()
    return "... " + tail


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def wait_running(app_names: list[str], timeout_s: float) -> None:
    """Block until every application is RUNNING; a failed one raises with Serve's message."""
    from ray import serve

    statuses: dict[str, str] = {}

    def all_running() -> bool:
        apps = serve.status().applications
        statuses.update(
            {name: apps[name].status if name in apps else "NOT_STARTED" for name in app_names}
        )
        failed = {
            n: apps[n].message for n, s in statuses.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")
        }
        if failed:
            name, message = next(iter(failed.items()))
            raise RaylifeError(f"Serve application {name!r} failed to deploy: {message[-800:]}")
        return all(s == "RUNNING" for s in statuses.values())

    wait_until(
        all_running,
        timeout_s,
        lambda: (
            f"Serve applications not running after {timeout_s:.0f} s: {statuses}; "
            "check `ray status` for free CPUs"
        ),
    )


def _write_state(settings: Settings, local: LocalServe) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(local.__dict__, indent=1))
    os.replace(tmp, path)


def read_state(settings: Settings) -> LocalServe | None:
    try:
        return LocalServe(**json.loads(_state_path(settings).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def stop(settings: Settings) -> None:
    # lazy: resolved at call time, so a stand-in for it (tests that prove no cluster starts) is the one called
    from ray import serve

    from raylife.cluster import shutdown_if_started

    with contextlib.suppress(Exception):  # already gone: nothing left to stop
        serve.shutdown()
    _wait_haproxy_ports_released()
    with contextlib.suppress(FileNotFoundError):
        _state_path(settings).unlink()
    shutdown_if_started()


def _wait_haproxy_ports_released(timeout_s: float = 15.0) -> None:
    """After serve.shutdown(): wait (bounded) until the HAProxy listener ports this process gave
    its cluster can be bound again, so a Serve started next on the same cluster (the test suite
    does so per module) does not race an HAProxy still exiting for them."""
    import socket

    ports = [int(os.environ[n]) for n in HAPROXY_PORT_VARIABLES if os.environ.get(n, "").isdigit()]

    def released() -> bool:
        for port in ports:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as HAProxy binds
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    return False
        return True

    if ports:
        poll(released, timeout_s)


def wait_until_stopped() -> str:
    """Block until Ctrl-C (SIGINT) or SIGTERM (how Kubernetes and systemd stop a process) and
    return the signal's name; the caller then drains with stop(). Without this, SIGTERM killed the
    process mid-request with Ray's signal stack dump and left Serve running."""
    import signal
    import threading

    received: list[str] = []
    stopped = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stopped.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopped.wait(timeout=3600):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0]


def notify_promotion(settings: Settings, model: str, generation: int) -> str | None:
    """Tell a running local deployment (if any) to load `model`'s new promotion. Returns its URL.

    Only `user_config.promotion` changes, so Serve reconfigures the running replicas in place.
    """
    local = read_state(settings)
    if local is None or model not in local.models:
        return None
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    try:
        ServeSubmissionClient(local.dashboard_url).get_serve_details()
    except Exception:  # a stale state file: the server is gone
        return None
    update_deployments(
        settings,
        local,
        [model],
        lambda deployment: deployment.setdefault("user_config", {}).update(promotion=generation),
    )
    return local.url


def update_deployments(
    settings: Settings,
    local: LocalServe,
    models: list[str],
    change: Callable[[dict[str, Any]], Any],
    timeout_s: float = 120.0,
) -> None:
    """The one way to edit the running deployment: `change` each model deployment of `models`
    in the recorded config, then apply it (Serve updates only what changed) and wait."""
    for _, deployment in serve_config.model_deployments(local.config, models):
        change(deployment)
    redeploy(settings, local, timeout_s)


def redeploy(settings: Settings, local: LocalServe, timeout_s: float = 120.0) -> None:
    """Apply local.config to the running deployment (Serve updates only what changed) and wait."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(local.dashboard_url).deploy_applications(local.config)
    _write_state(settings, local)
    wait_running([app["name"] for app in local.config["applications"]], timeout_s)


def wait_for_version(url: str, model: str, version: str, timeout_s: float = 60.0) -> None:
    """Until GET /<model>/info answers `version` (replicas reload asynchronously)."""
    import httpx

    wait_until(
        lambda: httpx.get(f"{url}/{model}/info", timeout=5).json().get("version") == version,
        timeout_s,
        f"{model} did not switch to {version} within {timeout_s:.0f} s",
        interval_s=0.25,
        ignore=(httpx.HTTPError,),
    )


def first_test_row(model: str) -> tuple[Any, Any]:
    """(raw inputs, truth) of the first row of `model`'s held-out test split (embedded data)."""
    # lazy: imports pyarrow, needed only on this path
    from raylife.catalog.lookup import get_spec
    from raylife.config import DataConfig
    from raylife.data.prepare import prepare

    test = prepare(get_spec(model), DataConfig()).test_raw
    return test.X[0], test.y[0]


def query_test_row(url: str, model: str, row: Any, truth: Any) -> str:
    """POST one raw input row (an image model gets it as a PNG upload); a one-line answer."""
    import io

    import httpx
    import numpy as np

    if row.ndim == 3:
        from PIL import Image

        png = io.BytesIO()
        Image.fromarray(row[0].clip(0, 255).astype(np.uint8)).save(png, format="PNG")
        files = {"file": ("digit.png", png.getvalue(), "image/png")}
        response = httpx.post(f"{url}/{model}/image", files=files, timeout=30)
        sent = "a 28x28 PNG"
    else:
        response = httpx.post(f"{url}/{model}", json={"row": row.tolist()}, timeout=30)
        sent = "[" + ", ".join(f"{v:.3g}" for v in row[:4]) + (", ...]" if len(row) > 4 else "]")
    if response.status_code != 200:
        raise RaylifeError(f"POST {url}/{model} answered {response.status_code}: {response.text}")
    body = response.json()
    answer = body["predictions"][0]
    if "value" in answer:
        shown, expected = f"{answer['value']:.2f}", f"{float(truth):.2f}"
    else:  # probabilities are keyed by label name, in class order
        shown, expected = answer["label"], list(answer["probabilities"])[int(truth)]
    return f"POST /{model} {sent} -> {shown} (true {expected}) from version {body['version']}"
