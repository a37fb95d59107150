"""Stage 2 searches at the fidelity of the full fine-tune: its column reproduces its winner."""

from __future__ import annotations

import optuna
import pytest

from safs_optuna.cli import main
from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline
from safs_optuna.pipeline.fidelity import configured_epochs, known_epochs
from safs_optuna.pipeline.stages import stage

from ._tiny import write_config

pytestmark = pytest.mark.slow

FULL_FIDELITY = ["--set", 'hpo.epochs="final"', "--set", "hpo.fraction=1.0", "--set", "final.epochs=2",
                 "--set", 'hpo.pruner="none"']


def test_stage2_trials_train_the_full_fine_tune_and_its_column_reproduces_the_winner(tmp_path):
    path = write_config(tmp_path)
    assert main(["run", str(path), *FULL_FIDELITY]) == 0
    cfg = load_config(path, {"hpo.epochs": "final", "hpo.fraction": 1.0, "final.epochs": 2,
                             "hpo.pruner": "none"})
    pipe = Pipeline(cfg, create=False, log=lambda msg: None)
    for stage in ("hpo", "hpo-relu"):
        trials = optuna.load_study(study_name=f"tiny/{stage}", storage=cfg.storage).trials
        assert trials and all(len(t.intermediate_values) == 2 for t in trials), stage  # [final] epochs
    winner = pipe.studies.status("hpo-relu").best_trial
    column = pipe.studies.status("stage2").best_trial
    # Same data, seed, protocol and learned scales: the full fine-tune is the search trial again,
    # so the column scores on validation exactly what made the winner win.
    assert column.user_attrs["val_accuracy"] == pytest.approx(winner.value, abs=1e-3)
    assert column.user_attrs["hparams"]["lr"] == pytest.approx(winner.params["lr"])
    final = pipe.studies.status("final").best_trial
    assert final.user_attrs["val_accuracy"] == pytest.approx(pipe.studies.status("hpo").best_trial.value, abs=1e-3)


def test_hpo_epochs_final_follows_the_final_epochs(tmp_path):
    path = write_config(tmp_path)
    cfg = load_config(path, {"hpo.epochs": "final", "final.epochs": 7})
    studies = Pipeline(cfg, log=lambda msg: None).studies
    assert not studies.status("hpo-relu").exists
    assert studies.status("hpo-relu").epochs == 7  # what `status` shows before the stage starts
    assert configured_epochs(cfg, stage("hpo")) == 7
    assert configured_epochs(cfg, stage("hpo-relu")) == 7
    assert known_epochs(cfg, stage("hpo"), studies.study("hpo")) == (7, None)
    assert load_config(path, {"hpo.epochs": 3}).hpo.epochs == 3

