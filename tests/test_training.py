"""Tests for safs_optuna.training: fit, evaluate, HParams, DivergedError."""

from __future__ import annotations

import copy
import math
import pickle

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, Dataset, TensorDataset

from safs_optuna import training
from safs_optuna.data import Splits
from safs_optuna.pruners import DivergencePruner
from safs_optuna.training import (
    OPTIMIZERS,
    SCHEDULES,
    DivergedError,
    EpochStats,
    Evaluation,
    HParams,
    evaluate,
    fit,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

NUM_CLASSES = 4


def make_images(n: int, size: int, channels: int, seed: int) -> TensorDataset:
    """Balanced classes; class k brightens quadrant k of a noisy image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    x = 0.5 * torch.randn(n, channels, size, size, generator=g)
    half = size // 2
    for k in range(NUM_CLASSES):
        r, c = divmod(k, 2)
        x[labels == k, :, r * half : (r + 1) * half, c * half : (c + 1) * half] += 1.0
    return TensorDataset(x, labels)


def make_splits(size: int = 8, channels: int = 1, n_train: int = 256, n_val: int = 128) -> Splits:
    return Splits(
        train=make_images(n_train, size, channels, seed=1),
        val=make_images(n_val, size, channels, seed=2),
        test=make_images(n_val, size, channels, seed=3),
        num_classes=NUM_CLASSES,
        in_channels=channels,
        image_size=size,
        name="synthetic",
    )


def mlp(size: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(size * size, 16), nn.ReLU(), nn.Linear(16, NUM_CLASSES)
    )


def cnn(channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(16, NUM_CLASSES),
    )


@pytest.fixture(scope="module")
def splits() -> Splits:
    return make_splits()


# ----------------------------------------------------------------------------- HParams


def test_hparams_defaults_and_coercion() -> None:
    hp = HParams(lr=1, weight_decay=0)
    assert (hp.optimizer, hp.schedule, hp.batch_size) == ("adam", "constant", 128)
    assert isinstance(hp.lr, float) and hp.lr == 1.0
    with pytest.raises(AttributeError):
        hp.lr = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'; valid: sgd, adam, adamw, rmsprop"),
        ({"schedule": "cyclic"}, "unknown schedule 'cyclic'; valid: constant, cosine, step"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"lr": float("nan")}, "lr must be a finite number, got nan"),
        ({"lr": "0.1"}, "lr must be a finite number, got '0.1'"),
        ({"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0, got -0.0001"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 32.0}, "batch_size must be an integer >= 1, got 32.0"),
        ({"augment": 1}, "augment must be True or False, got 1"),
        ({"nesterov": True}, "nesterov=True needs optimizer 'sgd' with momentum > 0"),
        (
            {"optimizer": "sgd", "momentum": 0.0, "nesterov": True},
            "nesterov=True needs optimizer 'sgd' with momentum > 0",
        ),
    ],
)
def test_hparams_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        HParams(**kwargs)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- fit

LR = {"sgd": 0.1, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.003}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_and_schedule_learns(
    splits: Splits, optimizer: str, schedule: str
) -> None:
    model = mlp()
    hp = HParams(optimizer=optimizer, lr=LR[optimizer], schedule=schedule, batch_size=32)
    result = fit(model, splits, hp, epochs=4, progress=False)
    losses = [s.train_loss for s in result.history]
    assert [s.epoch for s in result.history] == [0, 1, 2, 3]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]
    assert result.best_val_accuracy > 80.0  # chance is 25 %
    assert result.best_val_accuracy == max(s.val_accuracy for s in result.history)


def lrs(splits: Splits, schedule: str, epochs: int, lr: float = 0.01) -> list[float]:
    hp = HParams(optimizer="sgd", lr=lr, schedule=schedule, batch_size=64)
    return [s.lr for s in fit(mlp(), splits, hp, epochs=epochs, progress=False).history]


def test_step_schedule_divides_by_ten_at_half_and_three_quarters(splits: Splits) -> None:
    assert lrs(splits, "step", 4) == pytest.approx([0.01, 0.01, 0.001, 0.0001])


def test_cosine_schedule_decays_towards_zero(splits: Splits) -> None:
    got = lrs(splits, "cosine", 4)
    assert all(a > b for a, b in zip(got, got[1:]))
    assert 0 < got[-1] < 0.01 * 0.05  # last of 16 steps: 0.5 * (1 + cos(15 pi / 16))
    assert lrs(splits, "constant", 3) == [0.01] * 3


def test_linear_warmup_reaches_peak_after_first_epoch_then_decays(splits: Splits) -> None:
    got = lrs(splits, "linear_warmup", 5)
    assert got[0] == pytest.approx(0.01)  # warm-up ends with the first epoch's last step
    assert all(a > b for a, b in zip(got, got[1:]))


def test_plateau_schedule_reduces_lr_when_val_accuracy_stalls(splits: Splits) -> None:
    # A learning rate this small cannot change the predictions: accuracy never improves after
    # epoch 0, so after two stalled epochs (patience 1) the LR drops tenfold.
    got = lrs(splits, "plateau", 5, lr=1e-12)
    assert got == pytest.approx([1e-12, 1e-12, 1e-12, 1e-13, 1e-13])


def test_same_seed_same_numbers_different_seed_different(splits: Splits) -> None:
    hp = HParams(optimizer="sgd", lr=0.05, batch_size=32)
    runs = []
    for seed in (7, 7, 8):
        model = cnn(channels=1)
        result = fit(model, splits, hp, epochs=2, seed=seed, progress=False)
        runs.append(([(s.train_loss, s.val_accuracy, s.val_loss) for s in result.history], model))
    (h1, m1), (h2, m2), (h3, _) = runs
    assert h1 == h2
    pairs = zip(m1.state_dict().values(), m2.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)
    assert h1 != h3


def test_fit_restores_the_callers_global_rng(splits: Splits) -> None:
    model = cnn(channels=1)  # has dropout, which draws from the global RNG during fit
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, splits, HParams(batch_size=64), epochs=1, seed=5, progress=False)
    assert torch.equal(torch.rand(3), expected)


def wreck_after(epoch: int):
    """on_epoch callback that zeroes every weight after `epoch`, so later epochs are worse.

    With plain SGD (no momentum) a zeroed MLP cannot recover: every weight gradient is zero.
    """

    def callback(model: nn.Module, stats: EpochStats) -> None:
        if stats.epoch == epoch:
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()

    return callback


def test_keeps_the_weights_of_the_best_epoch(splits: Splits) -> None:
    model = mlp()
    wreck = wreck_after(1)
    hp = HParams(optimizer="sgd", lr=0.1, momentum=0.0, batch_size=32)
    result = fit(model, splits, hp, epochs=3, progress=False, on_epoch=lambda s: wreck(model, s))
    accs = [s.val_accuracy for s in result.history]
    assert accs[2] < 50.0 < result.best_val_accuracy  # the zeroed net stays near chance
    assert result.best_epoch == accs.index(max(accs)) < 2
    final = evaluate(model, splits.val)
    assert final.accuracy == result.best_val_accuracy
    assert final.loss == pytest.approx(result.history[result.best_epoch].val_loss)


def test_keeps_best_weights_of_a_sparsified_model(splits: Splits) -> None:
    model = mlp()
    for layer in (model[1], model[3]):
        torch_prune.l1_unstructured(layer, "weight", amount=0.5)
    mask = model[1].weight_mask.clone()
    wreck = wreck_after(1)
    hp = HParams(optimizer="sgd", lr=0.1, momentum=0.0, batch_size=32)
    result = fit(
        model, splits, hp, epochs=3, progress=False,
        on_epoch=lambda s: wreck(model, s),
    )
    assert result.best_epoch < 2
    assert torch.equal(model[1].weight_mask, mask)
    # `weight` (recomputed from weight_orig * weight_mask) matches the loaded best weights.
    assert torch.equal(model[1].weight, model[1].weight_orig * mask)
    assert bool((model[1].weight[mask == 0] == 0).all())
    assert bool(model[1].weight.abs().sum() > 0)
    assert evaluate(model, splits.val).accuracy == result.best_val_accuracy


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizers_step_in_one_kernel_where_torch_has_one(optimizer: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    params = [nn.Parameter(torch.randn(5)), nn.Parameter(torch.tensor(1.0))]
    opt = training._make_optimizer(params, HParams(optimizer=optimizer, lr=0.1))
    fused = optimizer != "rmsprop"  # RMSprop has no fused step
    assert opt.defaults.get("fused") is (True if fused else None)
    assert opt.defaults["foreach"] is (None if fused else True)
    monkeypatch.setattr(training, "_FUSED_DEVICES", ())  # a torch or device without fused steps
    opt = training._make_optimizer(params, HParams(optimizer=optimizer, lr=0.1))
    assert not opt.defaults.get("fused") and opt.defaults["foreach"] is True


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_the_fused_step_is_the_default_step_up_to_rounding(optimizer: str) -> None:
    hp = HParams(optimizer=optimizer, lr=0.05, momentum=0.9 if optimizer == "sgd" else 0.0, weight_decay=0.01)
    start = [torch.randn(7, 3, generator=torch.Generator().manual_seed(1)), torch.tensor(0.7)]
    grads = [torch.randn(7, 3, generator=torch.Generator().manual_seed(2)), torch.tensor(-0.3)]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    results = []
    for make in (lambda ps: training._make_optimizer(ps, hp),
                 lambda ps: cls(ps, lr=hp.lr, weight_decay=hp.weight_decay,
                                **({"momentum": hp.momentum} if optimizer == "sgd" else {}))):
        ps = [nn.Parameter(t.clone()) for t in start]
        opt = make(ps)
        for _ in range(3):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in ps])
    assert training._make_optimizer([nn.Parameter(torch.zeros(1))], hp).defaults["fused"]
    for fused, default, before in zip(*results, start):
        assert not torch.equal(fused, before)  # the steps moved it
        torch.testing.assert_close(fused, default, rtol=1e-5, atol=1e-6)


def test_only_trainable_parameters_change(splits: Splits) -> None:
    model = mlp()
    model[1].weight.requires_grad_(False)
    frozen = model[1].weight.clone()
    trained = model[3].weight.clone()
    fit(model, splits, HParams(optimizer="adamw", lr=0.01, weight_decay=0.1), 1, progress=False)
    assert torch.equal(model[1].weight, frozen)
    assert not torch.equal(model[3].weight, trained)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters with requires_grad=True"):
        fit(model, splits, HParams(), 1, progress=False)


def test_rejects_bad_arguments(splits: Splits) -> None:
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        fit(mlp(), splits, HParams(), 0)
    with pytest.raises(TypeError, match="HParams"):
        fit(mlp(), splits, {"lr": 0.1}, 1)  # type: ignore[arg-type]
    bad = copy.copy(splits)
    bad.train = iter(splits.train)  # type: ignore[assignment]
    with pytest.raises(TypeError, match="splits.train must be a map-style torch Dataset, got"):
        fit(mlp(), bad, HParams(), 1)


def test_trailing_batch_of_one_sample_does_not_break_batch_norm() -> None:
    data = make_splits(n_train=65, n_val=16)
    result = fit(cnn(channels=1), data, HParams(batch_size=32), epochs=1, progress=False)
    assert math.isfinite(result.history[0].train_loss)


def test_augmentation_for_32px_images_is_seeded(splits: Splits) -> None:
    data = make_splits(size=32, channels=3, n_train=64, n_val=32)
    hp = HParams(batch_size=32, augment=True)
    plain = fit(cnn(), data, HParams(batch_size=32), epochs=1, seed=3, progress=False)
    runs = [fit(cnn(), data, hp, epochs=1, seed=3, progress=False) for _ in range(2)]
    assert runs[0].history[0].train_loss == runs[1].history[0].train_loss
    assert runs[0].history[0].train_loss != plain.history[0].train_loss


def test_augment_shifts_and_flips_within_the_padding() -> None:
    from safs_optuna.training import _augment

    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32) + 1
    out = _augment(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, 32, 32)
    # Every output is the source image shifted by at most 4 px (zeros shifted in), maybe flipped.
    for i in range(64):
        src = x[i % 2]
        found = False
        for img in (out[i], out[i].flip(2)):
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    shifted = F.pad(src, (4, 4, 4, 4))[:, 4 + dy : 36 + dy, 4 + dx : 36 + dx]
                    found = found or torch.equal(img, shifted)
        assert found
    assert not all(torch.equal(out[i], x[i % 2]) for i in range(64))


def test_augment_is_ignored_with_a_warning_for_small_images(splits: Splits) -> None:
    with pytest.warns(UserWarning, match="augment=True ignored"):
        with_aug = fit(mlp(), splits, HParams(augment=True), epochs=1, progress=False)
    without = fit(mlp(), splits, HParams(), epochs=1, progress=False)
    assert with_aug.history[0].train_loss == without.history[0].train_loss


class NaNAfter(nn.Module):
    """Wraps a model; its output turns NaN from the `after`-th training forward on."""

    def __init__(self, inner: nn.Module, after: int) -> None:
        super().__init__()
        self.inner = inner
        self.after = after
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


@pytest.mark.parametrize("check_every", [1, 3])  # 3: as on accelerators, several at once
@pytest.mark.parametrize(("after", "epoch", "batch"), [(6, 1, 2), (5, 1, 1), (2, 0, 2)])
def test_nan_loss_raises_diverged_naming_epoch_and_batch(
    splits: Splits, monkeypatch: pytest.MonkeyPatch, check_every: int, after: int, epoch: int,
    batch: int,
) -> None:
    monkeypatch.setattr(training, "_LOSS_CHECK_EVERY_CPU", check_every)
    # 256 samples in batches of 64: 4 per epoch; e.g. forward 7 is epoch 1, batch 2.
    model = NaNAfter(mlp(), after=after)
    with pytest.raises(DivergedError) as info:
        fit(model, splits, HParams(batch_size=64), epochs=3, progress=False)
    err = info.value
    assert (err.epoch, err.batch) == (epoch, batch) and math.isnan(err.loss)
    assert f"epoch {epoch}, batch {batch}" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert (again.epoch, again.batch, str(again)) == (epoch, batch, str(err))


def test_diverged_is_a_deprecated_alias_of_diverged_error(splits: Splits) -> None:
    import safs_optuna

    assert training.Diverged is DivergedError and safs_optuna.Diverged is DivergedError
    assert safs_optuna.DivergedError is DivergedError and issubclass(DivergedError, RuntimeError)
    assert "DivergedError" in safs_optuna.__all__ and "Diverged" not in safs_optuna.__all__
    with pytest.raises(training.Diverged):  # code written against the old name still catches it
        fit(NaNAfter(mlp(), after=1), splits, HParams(batch_size=64), 1, progress=False)


def test_batched_loss_checks_give_the_same_mean_loss(
    splits: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    hp = HParams(batch_size=48)  # 6 batches, the last one short
    one = fit(mlp(), splits, hp, epochs=2, progress=False).history
    monkeypatch.setattr(training, "_LOSS_CHECK_EVERY_CPU", 4)
    four = fit(mlp(), splits, hp, epochs=2, progress=False).history
    assert [s.train_loss for s in four] == pytest.approx([s.train_loss for s in one], rel=1e-9)


def test_exploding_learning_rate_raises_diverged(splits: Splits) -> None:
    with pytest.raises(DivergedError, match="training diverged at epoch"):
        fit(mlp(), splits, HParams(optimizer="sgd", lr=1e12, batch_size=16), 5, progress=False)


def test_on_epoch_and_progress_bar(splits: Splits, capsys: pytest.CaptureFixture) -> None:
    seen: list[EpochStats] = []
    fit(mlp(), splits, HParams(), epochs=2, progress=True, on_epoch=seen.append)
    assert [s.epoch for s in seen] == [0, 1]
    assert all(s.seconds >= 0 and 0 <= s.val_accuracy <= 100 for s in seen)
    assert "fit" in capsys.readouterr().err
    fit(mlp(), splits, HParams(), epochs=1, progress=None)  # stderr is not a terminal here
    fit(mlp(), splits, HParams(), epochs=1, progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- trials


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_reports_every_epoch_to_the_trial(splits: Splits) -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    result = fit(mlp(), splits, HParams(), epochs=3, trial=trial, progress=False)
    study.tell(trial, result.best_val_accuracy)
    frozen = study.trials[0]
    assert frozen.intermediate_values == {s.epoch: s.val_accuracy for s in result.history}
    assert frozen.user_attrs["chance_accuracy"] == 25.0
    assert frozen.user_attrs["train_loss"] == result.history[-1].train_loss


def test_trial_pruned_when_the_pruner_says_so(splits: Splits) -> None:
    def objective(trial: optuna.Trial) -> float:
        result = fit(mlp(), splits, HParams(), epochs=3, trial=trial, progress=False)
        return result.best_val_accuracy

    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]
    assert "train_loss" in trial.user_attrs


def test_diverged_sets_the_trial_train_loss(splits: Splits) -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with pytest.raises(DivergedError):
        fit(NaNAfter(mlp(), after=5), splits, HParams(batch_size=64), 3, trial, progress=False)
    assert math.isnan(trial.user_attrs["train_loss"])
    assert list(study.trials[0].intermediate_values) == [0]  # epoch 1 never got reported


class Constant(nn.Module):
    """Predicts class 0 for everything (its only parameter is a bias the tests cannot move)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1)


def test_divergence_pruner_stops_a_chance_level_fit(splits: Splits) -> None:
    def objective(trial: optuna.Trial) -> float:
        hp = HParams(optimizer="sgd", lr=1e-9)
        return fit(Constant(), splits, hp, epochs=5, trial=trial, progress=False).best_val_accuracy

    study = optuna.create_study(direction="maximize", pruner=DivergencePruner())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {0: 25.0, 1: 25.0}
    assert trial.user_attrs["pruned_reason"] == (
        "validation accuracy 25.0% stayed at chance level (25.0%) for 2 epochs"
    )


def test_train_loss_is_the_mean_over_samples(splits: Splits) -> None:
    # Constant logits: the per-sample losses are known, whatever the batch composition; the
    # short last batch (256 = 5 * 48 + 16) must weigh by its size for the mean to match.
    hp = HParams(optimizer="sgd", lr=1e-12, batch_size=48)
    result = fit(Constant(), splits, hp, epochs=1, progress=False)
    logit = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    right = float(F.cross_entropy(logit, torch.tensor([0])))
    wrong = float(F.cross_entropy(logit, torch.tensor([1])))
    assert result.history[0].train_loss == pytest.approx(0.25 * right + 0.75 * wrong, rel=1e-6)


# ----------------------------------------------------------------------------- evaluate


class Pairs(Dataset):
    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):  # noqa: ANN204
        return self.data[i]


def test_evaluate_matches_a_direct_computation_for_every_input_kind(splits: Splits) -> None:
    model = mlp()
    x, y = splits.val.tensors
    with torch.no_grad():
        logits = model(x)
    expected_acc = 100.0 * float((logits.argmax(1) == y).float().mean())
    expected_loss = float(F.cross_entropy(logits, y))
    for data in (splits.val, Pairs(splits.val), DataLoader(splits.val, batch_size=50)):
        got = evaluate(model, data, batch_size=30)
        assert isinstance(got, Evaluation)
        assert got.accuracy == pytest.approx(expected_acc)
        assert got.loss == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_accuracy_in_percent_and_restores_modes(splits: Splits) -> None:
    # Constant always says class 0; a quarter of the balanced labels are 0.
    logit = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    right = float(F.cross_entropy(logit, torch.tensor([0])))
    wrong = float(F.cross_entropy(logit, torch.tensor([1])))
    assert evaluate(Constant(), splits.val) == (25.0, pytest.approx(0.25 * right + 0.75 * wrong))
    model = cnn(channels=1)
    model.train()
    model[1].eval()  # a frozen batch norm stays frozen
    before = model[1].running_mean.clone()
    evaluate(model, splits.val)
    assert model.training and model[5].training and not model[1].training
    assert torch.equal(model[1].running_mean, before)  # eval mode: statistics untouched
    with pytest.raises(ValueError, match="empty dataset"):
        evaluate(model, TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)))


def test_a_pruned_model_deep_copies_right_after_fit():
    # fit restores the best epoch's weights; torch.nn.utils.prune's recomputed weight must not
    # keep an autograd graph, or copy.deepcopy (every trial's fresh copy) raises.
    import copy

    import safs_optuna as so

    splits = so.data.load("quickstart").search_subset(0.05)
    model = so.make_searchable(so.build_model("lenet5"))
    so.magnitude_prune(model, 0.9, scope="layer")
    so.fit(model, splits, so.HParams(optimizer="adam", lr=1e-3, batch_size=256), epochs=1)
    twin = copy.deepcopy(model)
    x = splits.val.tensors[0][:8]
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
