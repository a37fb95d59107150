"""The ``sparse`` stage: one-shot or gradual magnitude pruning, resumed after a crash, old studies.

Every config here loads the same dense weights (``[dense] checkpoint``) so that the dense stage
costs nothing and two studies start from identical weights; gradual pruning runs a few one-epoch
fine-tunes on the embedded quick-start data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import safs_optuna as so
from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline, gradual, work_all
from safs_optuna.pipeline.results import density_table, row
from safs_optuna.pipeline.studies import PROGRESS_ATTR
from safs_optuna.sparsity import cubic_sparsity, magnitude_prune, prunable_modules, sparsity_report

from ._tiny import write_config

EPOCHS = 4


def _config(folder: Path, name: str = "tiny", gradual: int = EPOCHS, ablations: bool = False) -> Path:
    """The tiny config on fixed dense weights (``mine.pt``), pruned gradually over ``gradual`` epochs."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "mine.pt").exists():
        torch.manual_seed(1)
        torch.save(so.build_model("lenet5").state_dict(), folder / "mine.pt")
    path = write_config(folder, trials=1, name=name)
    text = (path.read_text()
            .replace("[dense]\nepochs = 1", '[dense]\ncheckpoint = "mine.pt"')
            .replace('scope = "layer"', f'scope = "layer"\ngradual_epochs = {gradual}')
            .replace("[hpo]\ntrials = 3", "[hpo]\ntrials = 1"))
    if not ablations:
        text = text.replace(f'name = "{name}"', f'name = "{name}"\nablations = false', 1)
    path.write_text(text)
    return path


def _sparsify(pipe: Pipeline) -> optuna.trial.FrozenTrial:
    """Run the pipeline's stages up to and including ``sparse``; its finished trial."""
    pipe.studies.prepare()
    while not pipe.studies.status("sparse").done:
        pipe.step()
    return pipe.studies.status("sparse").best_trial


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every layer's mask and the weights it computes with."""
    out = {}
    for name, m in prunable_modules(model).items():
        out[f"{name}.mask"] = m.weight_mask.clone()
        out[f"{name}.weight"] = (m.weight_orig * m.weight_mask).detach().clone()
    return out


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Epochs:
    """Counts the fine-tuning epochs of the stage (and records the masks each one started with);
    with ``stop_at``, interrupts the run as that epoch (from 0) starts, as Ctrl-C would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_at: int | None = None) -> None:
        self.masks: list[dict[str, torch.Tensor]] = []
        self.stop_at = stop_at

        def counted(model, *args, **kwargs):
            if self.stop_at is not None and len(self.masks) == self.stop_at:
                raise KeyboardInterrupt
            self.masks.append({k: v for k, v in _weights(model).items() if k.endswith(".mask")})
            return so.fit(model, *args, **kwargs)

        monkeypatch.setattr(gradual, "fit", counted)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict[str, torch.Tensor], list]:
    """The weights and per-epoch record of gradual pruning that was never interrupted."""
    pipe = Pipeline(load_config(_config(tmp_path_factory.mktemp("ref"), name="ref")), log=lambda msg: None)
    trial = _sparsify(pipe)
    return _weights(pipe.res.sparse_model), trial.user_attrs["schedule"]


def test_gradual_pruning_follows_the_cubic_schedule_to_the_target(tmp_path, monkeypatch, reference):
    lines: list[str] = []
    pipe = Pipeline(load_config(_config(tmp_path)), log=lines.append)
    epochs = _Epochs(monkeypatch)
    trial = _sparsify(pipe)

    assert len(epochs.masks) == EPOCHS  # one fine-tuning epoch per step of the schedule
    achieved = [s for s, _ in trial.user_attrs["schedule"]]
    planned = [100 * cubic_sparsity(e + 1, EPOCHS, final=0.99) for e in range(EPOCHS)]
    assert achieved == pytest.approx(planned, abs=0.1)  # within 0.1 pp at every step (per-layer rounding)
    assert 0 < achieved[0] < achieved[1] < achieved[2] < achieved[3]
    assert abs(100 * sparsity_report(pipe.res.sparse_model).ratio - 99.0) < 0.1
    assert trial.user_attrs["sparsity"] == pytest.approx(99.0, abs=0.1)
    assert set(trial.user_attrs["layer_density"]) == {"conv1", "conv2", "fc1", "fc2", "fc3"}
    assert trial.user_attrs["epochs"] == EPOCHS

    # Masks only grow: a weight masked at one step stays masked, and the stored model holds the last.
    masks = epochs.masks + [{k: v for k, v in _weights(pipe.res.sparse_model).items() if k.endswith(".mask")}]
    for before, after in zip(masks, masks[1:]):
        for key in before:
            assert bool((after[key] <= before[key]).all()), key
    assert _same(_weights(pipe.res.sparse_model), reference[0])  # the same numbers in another study

    for e in range(EPOCHS):
        assert any(f"sparse epoch {e + 1}/{EPOCHS} sparsity" in line for line in lines), lines
    assert pipe.studies.progress(pipe.stages[1]) is None  # finished: a --rerun starts over
    leftovers = [p.name for p in Path(pipe.cfg.artifacts).iterdir() if p.name.startswith("progress-")]
    assert leftovers == []  # progress files go once the stage's checkpoint is stored
    assert "gradual over 4 epochs" in density_table(pipe)


def test_one_shot_default_gives_the_weights_magnitude_prune_gave(tmp_path, monkeypatch):
    pipe = Pipeline(load_config(_config(tmp_path, gradual=0)), log=lambda msg: None)
    epochs = _Epochs(monkeypatch)
    trial = _sparsify(pipe)
    assert epochs.masks == [] and trial.user_attrs["epochs"] == 0  # no fine-tuning

    dense = so.build_model("lenet5")
    dense.load_state_dict(torch.load(tmp_path / "mine.pt"))
    dense = so.make_searchable(dense)
    magnitude_prune(dense, 0.99, scope="layer")  # what every worker did before the stage existed
    assert _same(_weights(pipe.res.sparse_model), _weights(dense))
    assert trial.user_attrs["sparsity"] == pytest.approx(99.0, abs=0.01)
    assert trial.value == pytest.approx(so.evaluate(dense, pipe.res.splits.val).accuracy)

    # The stored masks hold through fine-tuning, as for a model pruned in memory.
    model = pipe.res.fresh({})
    before = _weights(model)
    so.fit(model, pipe.res.search_splits(0.1), pipe.cfg.protocol.hparams(), 1, progress=False)
    after = _weights(model)
    for name in prunable_modules(model):
        assert torch.equal(after[f"{name}.mask"], before[f"{name}.mask"])
        assert not bool(after[f"{name}.weight"][before[f"{name}.mask"] == 0].any())


@pytest.mark.parametrize("progress", ["kept", "lost"])
def test_an_interrupted_schedule_resumes_at_its_last_epoch(tmp_path, monkeypatch, reference, progress):
    path = _config(tmp_path)
    first = Pipeline(load_config(path), log=lambda msg: None)
    _Epochs(monkeypatch, stop_at=2)  # interrupted as the third epoch starts: two are stored
    with pytest.raises(KeyboardInterrupt):
        _sparsify(first)
    study = first.studies.study("sparse")
    (stopped,) = study.get_trials(deepcopy=False)
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[PROGRESS_ATTR]["epoch"] == 2
    if progress == "lost":  # a damaged or deleted progress file: the schedule starts over
        (Path(first.cfg.artifacts) / stopped.user_attrs[PROGRESS_ATTR]["checkpoint"]).unlink()

    lines: list[str] = []
    again = Pipeline(load_config(path), log=lines.append)
    epochs = _Epochs(monkeypatch)
    trial = _sparsify(again)

    if progress == "kept":
        assert len(epochs.masks) == EPOCHS - 2  # epochs 1 and 2 are not trained again
        assert any(f"sparse: resuming gradual pruning at epoch 3/{EPOCHS}" in line for line in lines), lines
    else:
        assert len(epochs.masks) == EPOCHS
        assert any("cannot be used" in line and "starting gradual pruning over" in line for line in lines), lines
    # the same weights, masks and per-epoch record as the run that never stopped
    assert _same(_weights(again.res.sparse_model), reference[0])
    assert trial.user_attrs["schedule"] == reference[1]
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL, TrialState.COMPLETE]
    assert not [p for p in Path(again.cfg.artifacts).iterdir() if p.name.startswith("progress-")]


WORKER = """
import sys, torch
torch.set_num_threads(1)
from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline
pipe = Pipeline(load_config(sys.argv[1]), worker=1, heartbeat_interval=1, grace_period=2)
pipe.studies.prepare()
while not pipe.studies.status("sparse").done:
    pipe.step()
"""


@pytest.mark.slow
def test_a_worker_killed_during_the_schedule_is_resumed_by_the_next(tmp_path, reference):
    path = _config(tmp_path)
    cfg = load_config(path)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def done_epochs() -> int:
        try:
            trials = optuna.load_study(study_name="tiny/sparse", storage=cfg.storage).get_trials(deepcopy=False)
        except KeyError:
            return 0
        return max((t.user_attrs.get(PROGRESS_ATTR, {}).get("epoch", 0) for t in trials), default=0)

    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and done_epochs() < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the worker finished before it could be killed: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = done_epochs()
    assert 2 <= killed_at < EPOCHS

    lines: list[str] = []
    again = Pipeline(cfg, worker=2, log=lines.append, heartbeat_interval=1, grace_period=2)
    again.studies.prepare()
    again.studies.settle(again.log)  # the killed trial's heartbeat stops: it is failed and queued again
    trial = _sparsify(again)
    assert any(f"resuming gradual pruning at epoch {killed_at + 1}/{EPOCHS}" in line for line in lines), lines
    assert _same(_weights(again.res.sparse_model), reference[0])
    assert trial.user_attrs["schedule"] == reference[1]
    states = [t.state for t in again.studies.study("sparse").get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) == 1 and set(states) == {TrialState.FAIL, TrialState.COMPLETE}


def test_a_study_stored_before_the_sparse_stage_existed_runs_nothing_again(tmp_path):
    path = _config(tmp_path, gradual=0)
    cfg = load_config(path)
    work_all([Pipeline(cfg, log=lambda msg: None)], poll=0.1)
    # Make it a study of the version before the stage: no sparse study, no gradual_epochs key.
    sparse = optuna.load_study(study_name="tiny/sparse", storage=cfg.storage)
    (Path(cfg.artifacts) / sparse.best_trial.user_attrs["checkpoint"]).unlink()
    optuna.delete_study(study_name="tiny/sparse", storage=cfg.storage)
    for summary in optuna.get_all_study_summaries(cfg.storage):
        study = optuna.load_study(study_name=summary.study_name, storage=cfg.storage)
        stored = dict(study.user_attrs["config"])
        stored["sparsity"] = {k: v for k, v in stored["sparsity"].items() if k != "gradual_epochs"}
        study.set_user_attr("config", stored)

    def counts() -> dict[str, int]:
        return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(cfg.storage)}

    before = counts()
    old = Pipeline(cfg, log=lambda msg: None, create=False)
    measured = row(old)
    # no ablations here, nor the same-compute column
    assert [v is not None for v in measured.values] == [True, True, False, False, True, False]
    assert "| `conv1` | 150 | 1.33 |" in density_table(old)  # from the baseline's trial
    assert not old.studies.status("sparse").exists
    for stage in old.stages:
        if stage.name != "sparse":
            st = old.studies.status(stage)
            assert st.done and st.superseded == 0, stage.name

    lines: list[str] = []
    resumed = Pipeline(cfg, log=lines.append)
    work_all([resumed], poll=0.1)  # resuming runs the new stage only: cheap, one-shot
    after = counts()
    assert after.pop("tiny/sparse") == 1 and after == before
    assert not any(": started" in line and "sparse" not in line for line in lines), lines
    assert row(resumed) == measured
    st = resumed.studies.status("sparse")
    assert st.done and st.best_trial.user_attrs["layer_density"] == (
        resumed.studies.status("baseline").best_trial.user_attrs["layer_density"])
    for stage in resumed.stages:
        assert resumed.studies.status(stage).superseded == 0, stage.name
