import pytest
import torch

from raylife.catalog.architectures import CNN, build_model
from raylife.catalog.lookup import get_spec, model_names
from raylife.tasks import TASKS
from raylife.training.loop import (
    as_tensors,
    evaluate,
    fit,
    make_loader,
    make_optimizer,
    seed_everything,
)

from ..conftest import prepared


@pytest.mark.parametrize("model", sorted(model_names()))
@pytest.mark.parametrize("preset", ["default", "debug"])
def test_every_preset_builds_a_model_with_the_right_output(model, preset):
    spec = get_spec(model)
    data = prepared(model)
    n_out = spec.task_obj.output_size(len(data.label_names or []))
    module = build_model(
        spec.architecture, spec.model_args(spec.preset(preset), data.schema.shape, n_out)
    )
    out = module(torch.from_numpy(data.val.X[:5]))
    assert out.shape == (5, n_out)


def test_models_return_logits_not_probabilities():
    module = build_model("mlp", {"in_features": 4, "out_features": 3, "hidden_sizes": [10, 8]})
    with torch.no_grad():
        out = module(torch.randn(16, 4) * 10)
    assert not torch.allclose(
        out.sum(1), torch.ones(16)
    )  # no softmax inside (the tutorial's defect)


def test_tutorial_cnn_shape():
    cnn = CNN(
        in_channels=1, image_size=28, out_features=10, conv_channels=(32, 32), hidden_sizes=(100,)
    )
    first_linear = next(m for m in cnn.classifier if isinstance(m, torch.nn.Linear))
    assert first_linear.in_features == 800  # the tutorial's Linear(800 -> 100)


@pytest.mark.parametrize("model", ["iris", "boston", "ionosphere"])
def test_plain_loop_learns(model):
    spec = get_spec(model)
    task, data = spec.task_obj, prepared(model)
    hp = spec.defaults.replace(epochs=15, lr_schedule="constant")
    seed_everything(0)
    module = build_model(
        spec.architecture,
        spec.model_args(hp, data.schema.shape, task.output_size(len(data.label_names or []))),
    )
    X, y = as_tensors(data.val, task)
    before = task.finalize(evaluate(module, X, y, task))["loss"]
    optimizer = make_optimizer(hp, module.parameters())
    for _ in fit(module, make_loader(data.train, task, hp.batch_size, 0), task, optimizer, hp):
        pass
    after = task.finalize(evaluate(module, X, y, task))["loss"]
    assert after < before * 0.7


def test_objective_breaks_accuracy_ties_by_loss():
    task = TASKS["multiclass"]
    assert task.objective({"accuracy": 0.9, "loss": 0.2}) > task.objective(
        {"accuracy": 0.9, "loss": 0.4}
    )
    assert task.objective({"accuracy": 0.95, "loss": 5.0}) > task.objective(
        {"accuracy": 0.9, "loss": 0.01}
    )
    assert TASKS["regression"].objective({"rmse": 3.0, "loss": 1.0}) == 3.0


def test_cosine_schedule_decays_from_lr_towards_zero_and_constant_stays():
    import itertools
    import math

    from raylife.config import Hyperparams
    from raylife.training.loop import epoch_lr, schedule_lr

    hp = Hyperparams(lr=0.1, batch_size=8, epochs=10, hidden_sizes=(4,), lr_schedule="cosine")
    rates = [epoch_lr(hp, epoch) for epoch in range(1, 11)]
    assert rates[0] == 0.1 and all(a > b for a, b in itertools.pairwise(rates))
    assert rates[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 9 / 10)))
    assert rates[-1] < 0.01
    flat = hp.replace(lr_schedule="constant")
    assert {epoch_lr(flat, epoch) for epoch in range(1, 11)} == {0.1}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule_lr(optimizer, hp, 6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
