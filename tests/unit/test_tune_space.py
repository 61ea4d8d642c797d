from raylife.catalog.lookup import get_spec
from raylife.catalog.specs import Choice, LogUniform
from raylife.config import TrainConfig, TuneConfig
from raylife.training.tune import grace_period, sample_configs, trial_train_config


def test_sampling_is_seeded_bounded_and_anchored():
    spec = get_spec("mnist")
    first = sample_configs(spec, 5, seed=3)
    assert first == sample_configs(spec, 5, seed=3) and first != sample_configs(spec, 5, seed=4)
    for config in first:
        for name, dim in spec.search_space.items():
            if isinstance(dim, LogUniform):
                assert dim.low <= config[name] <= dim.high
            else:
                assert isinstance(dim, Choice) and config[name] in dim.options
    anchored = sample_configs(spec, 3, seed=3, anchor=spec.defaults)
    assert anchored[0] == {
        "lr": spec.defaults.lr,
        "hidden_sizes": spec.defaults.hidden_sizes,
        "batch_size": spec.defaults.batch_size,
    }
    assert len(anchored) == 3


def test_trial_config_reuses_the_training_config():
    spec = get_spec("iris")
    base = TrainConfig(model="iris", hparams=spec.defaults, num_workers=2)
    cfg = trial_train_config(base, {"lr": 0.05, "hidden_sizes": [32, 16], "batch_size": 8}, "run-x")
    assert (
        cfg.hparams.lr == 0.05
        and cfg.hparams.hidden_sizes == (32, 16)
        and cfg.hparams.epochs == spec.defaults.epochs
    )
    assert cfg.num_workers == 2 and cfg.run_name == "run-x"


def test_asha_grace_period_scales_with_the_budget():
    assert grace_period(TuneConfig(), 100) == 16
    assert grace_period(TuneConfig(), 2) == 1
    assert grace_period(TuneConfig(grace_period=5), 3) == 3


def test_sparse_report_count_is_improvements_plus_last():
    from raylife.tasks import TASKS
    from raylife_dev.report_cost import _sparse_reports

    history = [{"val_objective": v} for v in (0.5, 0.7, 0.6, 0.8, 0.8, 0.1)]
    # accuracy (max): 0.5, 0.7, 0.8 improve; plus the last epoch
    assert _sparse_reports(history, TASKS["multiclass"]) == 4
    # rmse (min): 0.5, 0.1 improve; plus the last epoch
    assert _sparse_reports(history, TASKS["regression"]) == 3


def test_trials_are_scored_at_the_epoch_their_run_yields():
    import pandas as pd

    from raylife.training.tune import Scoring

    reports = pd.DataFrame({"epoch": [1, 2, 3], "val_objective": [0.8, 0.9, 0.85]})
    assert Scoring("val_objective", "max", "best").chosen_row(reports)["epoch"] == 2
    assert Scoring("val_objective", "max", "last").chosen_row(reports)["epoch"] == 3
    assert Scoring("val_objective", "min", "best").chosen_row(reports)["epoch"] == 1
    assert Scoring("val_objective", "max", "last").chosen_row(reports.iloc[0:0]) is None
    lower, higher = Scoring("val_objective", "min", "best"), Scoring("val_objective", "max", "best")
    assert lower.rank(1.0, finished=True) > lower.rank(2.0, finished=True)
    assert higher.rank(2.0, finished=True) > higher.rank(1.0, finished=True)
    # An early-stopped trial competes on its best epoch, but not on half-trained last weights.
    assert higher.rank(0.99, finished=False) > higher.rank(0.9, finished=True)
    last = Scoring("val_objective", "max", "last")
    assert last.rank(0.9, finished=True) > last.rank(0.99, finished=False)
