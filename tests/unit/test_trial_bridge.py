"""Pins on Ray's code that raylife.training.trial_bridge and tune.TrialWatchdog rely on: each fails loudly,
naming what changed, when a Ray upgrade moves it (the bridge's soundness is argued from these)."""

from __future__ import annotations

import inspect

import ray


def test_ray_version_is_the_one_these_pins_were_read_from():
    assert ray.__version__ == "2.60.0", "re-read the pins below against this Ray, then update"


def test_train_calls_after_report_inside_the_poll_that_precedes_the_finished_check():
    """fit() returns only after every after_report (hence every queue put) has returned: the
    report handler runs in WorkerGroup.poll_status, and the controller polls before it looks
    whether training succeeded."""
    from ray.train.v2._internal.execution.checkpoint.report_handler import ReportCallbackHandler
    from ray.train.v2._internal.execution.controller.controller import TrainController
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    poll = inspect.getsource(WorkerGroup.poll_status)
    assert "callback.after_worker_group_poll_status(" in poll
    handler = inspect.getsource(ReportCallbackHandler.after_worker_group_poll_status)
    assert "callback.after_report(" in handler
    step = inspect.getsource(TrainController._step)
    assert step.index("await self._poll_workers()") < step.index("self._is_training_succeeded(")


def test_a_function_trainable_reports_its_end_from_the_functions_own_thread():
    """The bridge forwards every report from the thread Tune runs the function in; Tune reports
    RESULT_DUPLICATE from that same thread after the function returns, so it comes last."""
    from ray.tune.trainable import function_trainable

    source = inspect.getsource(function_trainable.wrap_function)
    assert source.index("output = fn()") < source.index("report({RESULT_DUPLICATE: True})")
    from ray.tune.trainable import trainable_fn_utils

    assert "get_session().report(metrics, checkpoint=checkpoint)" in inspect.getsource(
        trainable_fn_utils.report
    )


def test_rays_own_bridge_still_drains_reports_on_the_main_thread():
    """Why raylife does not use TuneReportCallback: its reports are put into the session's result
    queue by the trial's main thread (`_get_result_from_queues` -> `report`), the queue's only
    consumer. If Ray changes this, the bridge may be unnecessary: re-read and decide."""
    from ray.train._internal.session import _TrainSession

    drain = inspect.getsource(_TrainSession._get_result_from_queues)
    assert "self.report(inter_actor_item)" in drain
    assert "queue.Queue(1)" in inspect.getsource(_TrainSession.reset)


def test_a_trials_actor_handle_is_where_the_watchdog_reads_it():
    from ray.tune.experiment.trial import _TemporaryTrialState

    assert hasattr(_TemporaryTrialState(), "ray_actor")


def test_user_callbacks_get_after_report_with_these_arguments():
    from ray.train import UserCallback

    params = list(inspect.signature(UserCallback.after_report).parameters)
    assert params == ["self", "run_context", "metrics", "checkpoint"]
