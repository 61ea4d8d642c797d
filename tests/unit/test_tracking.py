"""MLflow tracking and the registry mirror against a real local MLflow store (a copy of a migrated
SQLite file per test), without Ray: the worker loop runs behind a fake session."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from raylife.catalog.lookup import get_spec
from raylife.cli import main
from raylife.cli.tracking import ui_command
from raylife.config import TrackingConfig, TrainConfig
from raylife.errors import RaylifeError
from raylife.lifecycle.promotion import promote, rollback
from raylife.lifecycle.store import ModelStore
from raylife.settings import Settings
from raylife.tracking import runs as tracking
from raylife.training.train import TRAIN_STATE_FILE, load_train_state, run_worker

from ..conftest import prepared, quick_artifact


class Crash(RuntimeError):
    pass


class Checkpoint:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextlib.contextmanager
    def as_directory(self) -> Any:
        yield str(self.folder)


class FakeSession:
    """A one-worker run (see train.WorkerSession) whose checkpoints are folders under `root`;
    `crash_at`: the report of that epoch raises (the worker dies, its checkpoint unwritten)."""

    rank, world = 0, 1

    def __init__(self, root: Path, run_name: str, crash_at: int | None = None) -> None:
        self.root, self.run_name, self.crash_at = root, run_name, crash_at
        self.reported: list[int] = []

    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare_model(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def prepare_loader(self, loader: Any) -> Any:
        return loader

    def dataset_shard(self, name: str) -> None:
        return None

    def latest_checkpoint(self) -> Any:
        saved = sorted(self.root.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
        return Checkpoint(saved[-1]) if saved else None

    def report(self, row: dict[str, float], checkpoint_folder: Path | None) -> None:
        if row["epoch"] == self.crash_at:
            raise Crash(f"worker died at epoch {self.crash_at}")
        self.reported.append(int(row["epoch"]))
        if checkpoint_folder is not None:
            shutil.copytree(checkpoint_folder, self.root / f"epoch-{int(row['epoch'])}")


def tracked_config(home: Path, epochs: int = 4, **tracking_changes: Any) -> TrainConfig:
    settings = Settings.from_env()
    config = tracking.config_for(settings)
    assert config is not None
    cfg = TrainConfig(
        model="iris",
        hparams=get_spec("iris").debug.replace(epochs=epochs),
        num_workers=1,
        report_interval_s=0,  # a report (and a checkpoint) every epoch
        tracking=config.replace(**tracking_changes),
    )
    return tracking.prepare(cfg)


def runs_of(cfg: TrainConfig) -> list[Any]:
    assert cfg.tracking is not None and cfg.tracking.experiment_id is not None
    return tracking.client(cfg.tracking.uri).search_runs([cfg.tracking.experiment_id])


def steps(cfg: TrainConfig, run_id: str, key: str = "val_loss") -> list[int]:
    assert cfg.tracking is not None
    history = tracking.client(cfg.tracking.uri).get_metric_history(run_id, key)
    return sorted(m.step for m in history)


def test_tracking_settings_default_flags_and_off(home, monkeypatch):
    monkeypatch.delenv("RAYLIFE_MLFLOW_URI", raising=False)
    settings = Settings.from_env()
    assert settings.mlflow_uri == f"sqlite:///{home.resolve()}/mlflow/mlflow.db"
    assert settings.mlflow_artifacts == (home.resolve() / "mlflow" / "artifacts").as_uri()
    assert Settings.from_env(tracking_uri="http://127.0.0.1:5000").mlflow_artifacts is None
    assert Settings.from_env(tracking=False).mlflow_uri is None
    monkeypatch.setenv("RAYLIFE_MLFLOW_URI", "http://mlflow:5000")
    assert Settings.from_env().mlflow_uri == "http://mlflow:5000"
    monkeypatch.setenv("RAYLIFE_MLFLOW_URI", "off")
    assert (
        Settings.from_env().mlflow_uri is None and tracking.config_for(Settings.from_env()) is None
    )
    assert ui_command(Settings.from_env(tracking_uri="sqlite:////x/m.db"), 5001)[3:6] == [
        "server",
        "--backend-store-uri",
        "sqlite:////x/m.db",
    ]


def test_a_run_is_one_mlflow_run_with_params_epochs_files_and_plot(tracked_home, tmp_path):
    cfg = tracked_config(tracked_home, epochs=3)
    run_worker(cfg, prepared("iris"), FakeSession(tmp_path / "ckpt", "train-iris-unit"))
    (run,) = runs_of(cfg)
    assert run.info.status == "FINISHED" and run.info.run_name == "train-iris-unit"
    params = run.data.params
    assert params["lr"] == str(cfg.hparams.lr) and params["num_workers"] == "1"
    assert params["data_sha256"] == prepared("iris").provenance["sha256"]
    assert {"git_commit", "ray_version", "torch_version", "seed", "data_source"} <= set(params)
    assert steps(cfg, run.info.run_id) == [1, 2, 3]
    assert {"train_loss", "val_accuracy", "val_objective", "epoch_s"} <= set(run.data.metrics)
    client = tracking.client(cfg.tracking.uri)
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert files == {"artifact", "learning_curves.png"}
    inner = {f.path for f in client.list_artifacts(run.info.run_id, "artifact")}
    assert inner == {"artifact/artifact.json", "artifact/weights.pt"}


def test_a_resumed_run_continues_the_same_mlflow_run_without_duplicate_steps(
    tracked_home, tmp_path
):
    cfg = tracked_config(tracked_home, epochs=5)
    folder = tmp_path / "ckpt"
    with pytest.raises(Crash):  # epoch 3 was logged, but its checkpoint never written
        run_worker(cfg, prepared("iris"), FakeSession(folder, "train-iris-resume", crash_at=3))
    (crashed,) = runs_of(cfg)
    assert crashed.info.status == "RUNNING" and steps(cfg, crashed.info.run_id) == [1, 2, 3]
    session = FakeSession(folder, "train-iris-resume")
    run_worker(cfg, prepared("iris"), session)  # resumes from epoch 2's checkpoint
    assert session.reported == [3, 4, 5]
    (run,) = runs_of(cfg)
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    assert steps(cfg, run.info.run_id) == [1, 2, 3, 4, 5]


def test_rows_carry_epoch_seconds_and_an_older_train_state_still_resumes(tmp_path):
    """Every row carries its epoch's compute seconds; the train state keeps no timings, and a
    checkpoint whose state still holds an older raylife's "timings" resumes all the same."""
    hparams = get_spec("iris").debug.replace(epochs=3)
    cfg = TrainConfig(model="iris", hparams=hparams, num_workers=1, report_interval_s=0)
    folder = tmp_path / "ckpt"
    with pytest.raises(Crash):
        run_worker(cfg, prepared("iris"), FakeSession(folder, "train-iris-state", crash_at=3))
    state = load_train_state(folder / "epoch-2")
    assert "timings" not in state and all(row["epoch_s"] > 0 for row in state["history"])
    older = {**state, "timings": {"epochs": [[0.0, 1.0], [1.5, 2.5]], "reports": [0.1]}}
    torch.save(older, folder / "epoch-2" / TRAIN_STATE_FILE)
    session = FakeSession(folder, "train-iris-state")
    run_worker(cfg, prepared("iris"), session)
    assert session.reported == [3]
    final = load_train_state(folder / "epoch-3")
    assert [row["epoch"] for row in final["history"]] == [1, 2, 3] and "timings" not in final


def test_a_resume_after_a_kill_between_metrics_and_tag_logs_no_epoch_twice(tracked_home, tmp_path):
    """MLflow's SQL store commits a batch's metrics, then its tags: a driver killed between the
    two leaves epoch metrics the LAST_EPOCH_TAG does not count. The resumed tracker must not log
    those epochs again."""
    cfg = tracked_config(tracked_home, epochs=5)
    assert cfg.tracking is not None
    first = tracking.Tracker(cfg.tracking)
    first.start(cfg, {}, "train-iris-killed", [])
    row = {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_objective": 1.0}
    first.log_epoch(row, flush=True)
    client = tracking.client(cfg.tracking.uri)
    # The kill: epoch 2's metrics committed, its tag never written.
    from mlflow.entities import Metric

    client.log_batch(first.run_id, metrics=[Metric(k, 0.5, 0, 2) for k in row if k != "epoch"])
    resumed = tracking.Tracker(cfg.tracking)
    resumed.start(cfg, {}, "train-iris-killed", [])
    assert resumed.run_id == first.run_id and resumed.last_epoch == 2
    for epoch in (2, 3):
        resumed.log_epoch({**row, "epoch": epoch}, flush=True)
    assert steps(cfg, first.run_id) == [1, 2, 3]


class TuneSession(FakeSession):
    """A one-process trial: each report goes through the sweep driver's TrialTracking callback
    as Tune hands it over (a copy of the metrics; the checkpoint registered first)."""

    def __init__(self, root: Path, run_name: str, callback: Any, trial: Any) -> None:
        super().__init__(root, run_name)
        self.callback, self.trial = callback, trial
        self.logged_results: list[dict[str, Any]] = []

    def report(self, row: dict[str, float], checkpoint_folder: Path | None) -> None:
        super().report(row, checkpoint_folder)
        self.trial.checkpoint = self.latest_checkpoint()
        result = dict(row)
        self.callback.on_trial_result(0, [], self.trial, result=result)
        self.logged_results.append(result)  # what Tune's own loggers then see


def test_a_sweeps_trials_are_logged_by_its_driver_nested_and_asha_stops_are_tagged(
    tracked_home, tmp_path
):
    import types

    import pandas as pd

    from raylife.config import TuneConfig
    from raylife.training.tune import HPARAMS, TrialTracking

    base = tracked_config(tracked_home, epochs=2)
    sweep = tracking.start_sweep(base, TuneConfig(name="tune-iris-unit"), prepared("iris"))
    assert sweep.run_id is not None
    assert sweep.tracking is not None
    trial_base = base.replace(tracking=sweep.tracking.replace(by_driver=True))
    assert isinstance(tracking.worker_tracker(trial_base, 0), tracking.NoTracker)
    callback = TrialTracking(trial_base, prepared("iris").provenance, "tune-iris-unit")
    for trial_id, lr in (("t1", 0.01), ("t2", 0.02)):
        trial = types.SimpleNamespace(trial_id=trial_id, config={HPARAMS: {"lr": lr}})
        callback.on_trial_start(0, [], trial)
        session = TuneSession(tmp_path / trial_id, f"tune-iris-unit-{trial_id}", callback, trial)
        cfg = trial_base.replace(hparams=trial_base.hparams.replace(lr=lr))
        run_worker(cfg, prepared("iris"), session)
        # Each report carried its epochs' rows; the callback took them out before Tune's loggers.
        assert session.reported == [1, 2]
        assert all(tracking.EPOCH_ROWS not in r for r in session.logged_results)
        callback.on_trial_complete(0, [], trial)
    trials = pd.DataFrame(
        [{"trial": "t1", "status": "done"}, {"trial": "t2", "status": "stopped early"}]
    )
    tracking.finish_sweep(sweep, trials, {"val_accuracy": 0.9, "epoch": 2})
    again = tracking.start_sweep(base, TuneConfig(name="tune-iris-unit"), prepared("iris"))
    assert again.run_id == sweep.run_id  # a restored sweep reuses its parent run
    runs = {r.info.run_name: r for r in runs_of(base)}
    assert set(runs) == {"tune-iris-unit", "tune-iris-unit-t1", "tune-iris-unit-t2"}
    client = tracking.client(base.tracking.uri)
    for trial_id, lr in (("t1", 0.01), ("t2", 0.02)):
        child = runs[f"tune-iris-unit-{trial_id}"]
        assert child.data.tags[tracking.PARENT_TAG] == sweep.run_id
        assert child.data.tags[tracking.KIND_TAG] == "trial" and child.info.status == "FINISHED"
        assert child.data.params["lr"] == str(lr)
        assert steps(base, child.info.run_id) == [1, 2]
        files = {f.path for f in client.list_artifacts(child.info.run_id)}
        assert files == {"artifact", "learning_curves.png"}
    assert runs["tune-iris-unit-t2"].data.tags[tracking.STOPPED_TAG] == "asha"
    assert tracking.STOPPED_TAG not in runs["tune-iris-unit-t1"].data.tags
    assert runs["tune-iris-unit"].data.metrics["best_val_accuracy"] == 0.9


class Flaky:
    """A tracking client whose `method` fails `failures` times (a server that went away)."""

    def __init__(self, real: Any, failures: int, method: str = "log_batch") -> None:
        self.real, self.failures, self.method = real, failures, method

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.real, name)
        if name != self.method:
            return call

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if self.failures > 0 and (name != "log_batch" or kwargs.get("metrics")):
                self.failures -= 1
                raise ConnectionError("Connection refused")
            return call(*args, **kwargs)

        return flaky


@pytest.mark.parametrize(
    ("method", "failures"),
    [("log_batch", 2), ("log_batch", 100), ("search_runs", 1)],
    ids=["down-then-back", "down-for-good", "down-at-start"],
)
def test_a_tracking_server_failing_mid_run_never_fails_the_run(
    tracked_home, tmp_path, monkeypatch, capsys, method, failures
):
    cfg = tracked_config(tracked_home, epochs=4)
    assert cfg.tracking is not None
    monkeypatch.setattr(tracking, "RETRY_AFTER_S", 0.0)
    real = tracking.client(cfg.tracking.uri)
    monkeypatch.setitem(tracking._CLIENTS, cfg.tracking.uri, Flaky(real, failures, method))
    session = FakeSession(tmp_path / "ckpt", "train-iris-flaky")
    run_worker(cfg, prepared("iris"), session)
    assert session.reported == [1, 2, 3, 4]  # training went on regardless
    (run,) = runs_of(cfg)
    out = capsys.readouterr().out
    if failures < 100:  # buffered, then logged once the server answered again: each step once
        assert steps(cfg, run.info.run_id) == [1, 2, 3, 4] and "not logged" not in out
        assert run.info.status == "FINISHED"
    else:
        assert steps(cfg, run.info.run_id) == []
        assert "MLflow run train-iris-flaky: 4 epoch(s) and the final files not logged" in out
        assert "Connection refused" in out and "training run itself is unaffected" in out


def test_an_unreachable_tracking_uri_fails_before_training_in_one_line(home, capsys):
    from raylife.cluster import free_port

    url = f"http://127.0.0.1:{free_port()}"
    code = main(["train", "--model", "iris", "--preset", "debug", "--tracking-uri", url])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"MLflow tracking at {url} is unreachable" in err and "--no-tracking" in err
    with pytest.raises(RaylifeError, match="unreachable"):
        tracking.prepare(
            TrainConfig(
                model="iris", hparams=get_spec("iris").debug, tracking=TrackingConfig(uri=url)
            )
        )


def test_store_versions_mirror_as_mlflow_models_and_champion_follows_the_pointer(
    tracked_home, monkeypatch
):
    import mlflow.pyfunc

    from raylife.inference.predict import Predictor
    from raylife.tracking.registry_mirror import Mirror

    settings = Settings.from_env()
    store, config = ModelStore(settings.store_uri), tracking.config_for(settings)
    assert config is not None
    mirror = Mirror(config)
    first = store.register(quick_artifact("iris", epochs=1))
    second = store.register(quick_artifact("iris", epochs=0))
    assert promote(store, "iris", first, mirror=mirror).mirror_problem == ""
    assert promote(store, "iris", second, force=True, mirror=mirror).mirror_problem == ""
    assert set(mirror.mirrored("iris")) == {first, second}
    client = tracking.client(config.uri)
    assert client.get_model_version_by_alias("iris", "champion").tags["raylife.version"] == second

    outcome = rollback(store, "iris", mirror=mirror)
    assert outcome.action == "rollback" and outcome.mirror_problem == ""
    champion = client.get_model_version_by_alias("iris", "champion")
    assert champion.tags["raylife.version"] == first
    monkeypatch.setenv("MLFLOW_TRACKING_URI", config.uri)  # as a user of the registry would
    loaded = mlflow.pyfunc.load_model("models:/iris@champion")
    meta = loaded.metadata
    assert [c["name"] for c in meta.get_input_schema().to_dict()] == prepared(
        "iris"
    ).schema.feature_names
    example = prepared("iris").schema.example
    import pandas as pd

    answer = loaded.predict(pd.DataFrame([example], columns=prepared("iris").schema.feature_names))
    expected = Predictor.from_store(store, "iris", first).predict_rows([example])[0]["label"]
    assert list(answer["label"]) == [expected]


@pytest.mark.slow  # ~6 s: a fresh interpreter imports MLflow, in make test only
def test_mirroring_a_version_prints_no_mlflow_advice(tmp_path):
    # Every trained version is mirrored, so MLflow's advice would print in every `make run`
    # (issue 14: expected events print nothing). Importing the module defines the pyfunc class,
    # where MLflow warns about predict's type hints: a fresh interpreter shows it.
    import logging
    import subprocess
    import sys
    import warnings

    from raylife.tracking.registry_mirror import save_pyfunc

    imported = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import raylife.tracking.registry_mirror"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "type hints" not in imported.stderr, imported.stderr[-2000:]
    records: list[logging.LogRecord] = []
    catcher = logging.Handler(logging.WARNING)
    catcher.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("mlflow").addHandler(catcher)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            model = save_pyfunc(quick_artifact("iris", epochs=0), "v1", tmp_path)
    finally:
        logging.getLogger("mlflow").removeHandler(catcher)
    assert (model / "MLmodel").is_file()
    assert [r.getMessage()[:80] for r in records] == []
    assert [str(w.message)[:80] for w in warned if "mlflow" in w.filename] == []


def test_a_failing_mirror_never_blocks_a_promotion_and_sync_repairs_it(tracked_home, capsys):
    from raylife.cluster import free_port
    from raylife.tracking.registry_mirror import Mirror

    settings = Settings.from_env()
    store = ModelStore(settings.store_uri)
    version = store.register(quick_artifact("iris", epochs=0))
    broken = Mirror(TrackingConfig(uri=f"http://127.0.0.1:{free_port()}"))
    outcome = promote(store, "iris", version, mirror=broken)
    assert outcome.action == "promote" and store.pointer("iris").version == version
    assert "not updated" in outcome.line and "raylife models sync iris" in outcome.line

    assert main(["models", "sync", "iris"]) == 0
    assert "iris: 1 version(s) mirrored" in capsys.readouterr().out
    config = tracking.config_for(settings)
    assert config is not None
    champion = tracking.client(config.uri).get_model_version_by_alias("iris", "champion")
    assert champion.tags["raylife.version"] == version
    assert main(["models", "sync", "iris"]) == 0  # idempotent: nothing registered twice
    assert len(Mirror(config).mirrored("iris")) == 1


@contextlib.contextmanager
def running_ui(home: Path) -> Any:
    """`raylife ui` on a free port over `home`'s local store; yields (process, url, its line)."""
    import os
    import signal
    import subprocess
    import sys

    from raylife.cluster import free_port
    from raylife.waiting import wait_until

    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "raylife.cli", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert ui.stdout is not None
        line = wait_until(
            lambda: (text := ui.stdout.readline()) and "MLflow UI of" in text and text,
            90,
            "raylife ui printed no URL",
        )
        yield ui, f"http://127.0.0.1:{port}", line
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)


@pytest.mark.slow
def test_raylife_ui_serves_the_local_store_on_loopback_and_stops_with_its_server(tracked_home):
    import signal

    import httpx

    tracked_config(tracked_home)  # creates the model's experiment
    with running_ui(tracked_home) as (ui, url, line):
        assert url in line and str(tracked_home) in line
        found = httpx.get(f"{url}/ajax-api/2.0/mlflow/experiments/search?max_results=10").json()
        assert "raylife-iris" in {e["name"] for e in found["experiments"]}
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 130
        with pytest.raises(httpx.HTTPError):  # the server went with it
            httpx.get(f"{url}/health", timeout=2)


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


def _browser(chromium: str) -> Any:
    """Headless Chromium driven by Debian's chromium-driver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1600,1000")
    return webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None or shutil.which("chromedriver") is None,
    reason="needs Chromium and its driver (apt-get install chromium chromium-driver)",
)
def test_a_sweep_and_its_trials_show_in_the_mlflow_ui_in_a_headless_browser(tracked_home, tmp_path):
    """A person's view: Chromium opens the sweep's experiment in `raylife ui`, unfolds the
    sweep's run, sees both trials, and opens a trial's page with its metrics. Screenshots are
    kept (paths printed; copied to $RAYLIFE_TEST_ARTIFACTS when set)."""
    import os

    import pandas as pd
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from raylife.config import TuneConfig

    pytest.importorskip("selenium")
    base = tracked_config(tracked_home, epochs=2)
    sweep = tracking.start_sweep(base, TuneConfig(name="tune-iris-ui"), prepared("iris"))
    for trial_id in ("a1", "b2"):
        session = FakeSession(tmp_path / trial_id, f"tune-iris-ui-{trial_id}")
        run_worker(base.replace(tracking=sweep.tracking), prepared("iris"), session)
    trials = pd.DataFrame([{"trial": "a1", "status": "done"}, {"trial": "b2", "status": "done"}])
    tracking.finish_sweep(sweep, trials, {"val_accuracy": 0.9})
    assert base.tracking is not None
    experiment = f"#/experiments/{base.tracking.experiment_id}"
    shots = []

    def shot(driver: Any, name: str) -> None:
        path = tmp_path / f"mlflow-ui-{name}.png"
        driver.save_screenshot(str(path))
        (tmp_path / f"mlflow-ui-{name}.html").write_text(driver.page_source)
        shots.append(path)

    with running_ui(tracked_home) as (_, url, _line):
        driver = _browser(str(_chromium()))
        try:
            wait = WebDriverWait(driver, 60)
            driver.get(f"{url}/{experiment}/runs")
            wait.until(lambda d: "tune-iris-ui" in d.page_source)
            shot(driver, "sweep")
            # The [+] beside a run name that has nested runs (MLflow 3's runs table).
            expand = driver.find_elements(
                By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']"
            )
            assert expand, "no control unfolds the sweep's run"
            expand[0].click()
            wait.until(lambda d: all(f"tune-iris-ui-{t}" in d.page_source for t in ("a1", "b2")))
            shot(driver, "sweep-trials")
            child = tracking.find_run(
                tracking.client(base.tracking.uri), base.tracking.experiment_id, "tune-iris-ui-a1"
            )
            driver.get(f"{url}/{experiment}/runs/{child.info.run_id}")
            wait.until(lambda d: "val_accuracy" in d.page_source)
            shot(driver, "trial")
            assert "val_loss" in driver.page_source and "tune-iris-ui-a1" in driver.page_source
            tab = driver.find_element(By.XPATH, "//*[text()='Model metrics']")
            tab.click()  # the trial's per-epoch curves
            wait.until(lambda d: d.page_source.count("val_accuracy") >= 2)
            shot(driver, "trial-metrics")
        finally:
            with contextlib.suppress(Exception):
                shot(driver, "last")
            driver.quit()
            print("screenshots:", *shots)
            if os.environ.get("RAYLIFE_TEST_ARTIFACTS"):
                target = Path(os.environ["RAYLIFE_TEST_ARTIFACTS"])
                target.mkdir(parents=True, exist_ok=True)
                for path in shots:
                    shutil.copy(path, target / path.name)


def test_a_store_opened_in_the_background_is_the_one_the_run_uses(tmp_path):
    """raylife run opens the MLflow store while its cluster starts; the run's own client() must
    get that same client (one opening, one set of schema migrations), racing or not."""
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    thread = tracking.open_in_background(uri)
    racing = tracking.client(uri)  # while the thread may still be opening it
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert tracking.client(uri) is racing
    assert (tmp_path / "mlflow" / "mlflow.db").exists()


def test_a_store_that_fails_in_the_background_still_fails_the_run_in_one_line(home):
    """The thread swallows its failure; the run meets the same failure itself, with the message
    that names the URI and the off switch."""
    from raylife.cluster import free_port

    url = f"http://127.0.0.1:{free_port()}"
    tracking.open_in_background(url).join(timeout=60)
    with pytest.raises(RaylifeError, match="unreachable") as failure:
        tracking.prepare(
            TrainConfig(
                model="iris", hparams=get_spec("iris").debug, tracking=TrackingConfig(uri=url)
            )
        )
    assert "--no-tracking" in str(failure.value)
