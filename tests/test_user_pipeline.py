"""The whole pipeline on the user's own sources: two workers, a kill and a resume, status, report,
the dashboard note and export — for each kind of source the plugin takes.

Each case writes a user project (tests/_user_project.py) into a fresh folder and runs the CLI as
a user would. Budgets are tiny; what is checked is that everything the plugin adds works the same
on user sources as on the built-in names.
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

from safs_optuna.config import load_config
from safs_optuna.pipeline import column_trials

from ._user_project import tiny_config, write_images, write_modules, write_pruned

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

# id: (model, data, config text to add, table lines to add after [sparsity] scope)
CASES = {
    # 11 M weights on 2 cores: a tenth of the quick-start data (1 channel, 28 px).
    "torchvision-resnet18-on-quickstart": ("torchvision:resnet18", "datamod:quickstart_part", "", ""),
    "module-model-on-an-image-folder": ("netmod:make_net", "folder:images", "", ""),
    "a-dataset-with-a-transform": ("netmod:make_net", "datamod:make_data", "", ""),
    "torch-prune-masks": ("netmod:make_net", "folder:images", "", 'checkpoint = "pruned_masks.pt"'),
    "pruned-as-zeros": ("netmod:make_net", "folder:images", "", 'checkpoint = "pruned_zeros.pt"'),
    "your-own-loop-and-metric": ("netmod:make_net", "folder:images",
                                 '[training]\nfit = "fitmod:fit"\nmetric = "top1"\nevaluate = "fitmod:top1"\n', ""),
}


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safs_optuna.cli", *args], capture_output=True, text=True,
                          timeout=900, env=ENV, cwd=cwd)


def _project(folder: Path, case: str) -> Path:
    model, data, extra, sparsity = CASES[case]
    write_modules(folder)
    write_images(folder / "images")
    write_pruned(folder)
    if model.startswith("torchvision:"):
        path = tiny_config(folder, "mine", model, data, extra, batch_size=64, fraction=0.3, final_epochs=1)
    else:
        path = tiny_config(folder, "mine", model, data, extra)
    if sparsity:
        path.write_text(path.read_text().replace('scope = "lamp"', f'scope = "lamp"\n{sparsity}'))
    return path


def _studies(cfg) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = optuna.storages.RDBStorage(cfg.storage)
    out = {}
    for summary in optuna.get_all_study_summaries(storage):
        out[summary.study_name.split("/", 1)[1]] = optuna.load_study(
            study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_workers_kill_resume_status_report_note_export(case, tmp_path):
    path = _project(tmp_path, case)
    cfg = load_config(path)

    # Two workers; the whole run is killed (-9) once stage 1 has a finished trial, then resumed.
    proc = subprocess.Popen([sys.executable, "-m", "safs_optuna.cli", "run", str(path), "--workers", "2"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        try:
            if any(t.state.is_finished() for t in _studies(cfg).get("activations", [])):
                break
        except Exception:  # noqa: BLE001 - the database is being created
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)

    resumed = _cli("run", str(path), "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "| mine (measured) |" in resumed.stdout
    assert "w1]" in resumed.stderr and "w2]" in resumed.stderr

    studies = _studies(cfg)
    pruned_given = "checkpoint" in CASES[case][3]
    expected = {"sparse", "baseline", "activations", "hpo", "final"} | (set() if pruned_given else {"dense"})
    assert set(studies) == expected
    for stage in ("sparse", "baseline", "final") + (() if pruned_given else ("dense",)):
        complete = [t for t in studies[stage] if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 1, (stage, [t.state for t in studies[stage]])  # ran once despite the kill
        assert "test_accuracy" in complete[0].user_attrs
    for stage, budget in (("activations", 4), ("hpo", 2)):
        assert sum(t.state.is_finished() and t.state.name != "FAIL" for t in studies[stage]) >= budget
    sparsity = studies["final"][-1].user_attrs["sparsity"]
    assert 89.0 < sparsity < 91.0, sparsity
    if pruned_given:  # the user's masks, exactly: the sparse stage's model has the checkpoint's zeros
        import torch

        state = torch.load(tmp_path / "pruned_masks.pt", weights_only=True)
        kept = studies["sparse"][-1].user_attrs["layer_density"]["block.conv"][1]
        assert kept == pytest.approx(100 * float(state["block.conv.weight_mask"].mean()), abs=1e-3)
    if CASES[case][2]:
        final = [t for t in studies["final"] if t.state == optuna.trial.TrialState.COMPLETE][0]
        assert 0.0 <= final.value <= 1.0  # the user's metric (a fraction), not a percentage
        assert 0.0 <= final.user_attrs["test_accuracy"] <= 1.0  # the user's evaluate

    status = _cli("status", str(path))
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" done ") + status.stdout.count(" NOTHING ") == len(expected)
    if pruned_given:
        assert "of the pruned checkpoint pruned_" in status.stdout and "measured" in status.stdout
    report = _cli("report", str(path))
    assert report.returncode == 0 and "| mine (measured) |" in report.stdout

    import optuna_dashboard

    note = optuna_dashboard.get_note(optuna.load_study(study_name="mine/final", storage=cfg.storage))
    assert "| mine (measured) |" in note

    out = tmp_path / "model.pt2"
    export = _cli("export", str(path), str(out))
    assert export.returncode == 0, export.stderr[-2000:]
    assert "test accuracy" in export.stdout and out.stat().st_size > 0


def test_the_python_call_runs_the_staged_pipeline_with_objects_and_resumes(tmp_path, monkeypatch, capfd):
    """``so.run`` with the objects themselves: two workers (spawned), the same storage and report
    as the CLI, a second call resumes (nothing to do), another model object is refused."""
    import safs_optuna as so
    from safs_optuna.pipeline.studies import PipelineError

    write_modules(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import datamod
    import fitmod
    import netmod

    config = {"name": "py", "threads": 1, "ablations": False, "storage": f"sqlite:///{tmp_path / 'py.db'}",
              "artifacts": str(tmp_path / "py.artifacts"), "sparsity": {"ratio": 0.9, "scope": "lamp"},
              "dense": {"epochs": 1}, "protocol": {"batch_size": 32},
              "activations": {"trials": 3, "epochs": 2}, "hpo": {"trials": 2, "epochs": 1}, "final": {"epochs": 1},
              "training": {"metric": "top1"}}
    results = so.run(config, model=netmod.make_net, data=datamod.make_data, fit=fitmod.fit,
                     evaluate=fitmod.top1, workers=2)
    assert "| py (measured) |" in results.table
    final = column_trials(results.pipelines[0])["SAFS"]
    assert final.user_attrs["worker"] in (1, 2) and 0.0 <= final.value <= 1.0
    stored = optuna.load_study(study_name="py/final", storage=config["storage"]).user_attrs["config"]
    assert stored["model"]["name"] == "netmod:make_net" and stored["data"]["name"] == "datamod:make_data"
    assert stored["training"]["fit"] == "fitmod:fit"
    # The second worker is a spawned process on the same study (whether it gets a trial before
    # the first has run them all depends on how fast it imports torch on a busy machine).
    assert "[py w2] all stages done" in capfd.readouterr().err

    again = so.run(config, model=netmod.make_net, data=datamod.make_data, fit=fitmod.fit, evaluate=fitmod.top1)
    assert again.table == results.table  # resumed: everything was done
    with pytest.raises(PipelineError, match="model.name: stored 'netmod:make_net', config 'netmod:make_other'"):
        so.run(config, model=netmod.make_other, data=datamod.make_data, fit=fitmod.fit, evaluate=fitmod.top1)



def test_a_loop_that_fails_some_trials_fails_those_and_the_search_goes_on(tmp_path):
    write_modules(tmp_path)
    write_images(tmp_path / "images")
    extra = '[training]\nfit = "fitmod:no_sgd_fit"\nmetric = "top1"\n\n[hpo.space]\noptimizers = ["sgd", "adam"]\n'
    path = tiny_config(tmp_path, "flaky", "netmod:make_net", "folder:images", extra)
    path.write_text(path.read_text().replace("[hpo]\ntrials = 2", "[hpo]\ntrials = 6"))
    run = _cli("run", str(path))
    assert run.returncode == 0, run.stderr[-3000:]
    trials = _studies(load_config(path))["hpo"]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.params["optimizer"] == "sgd" for t in failed)
    assert len(trials) == 6  # a failed trial counts against the budget: retrying it would fail again
    status = _cli("status", str(path))
    assert f"hpo: {len(failed)} failed; last, trial {failed[-1].number}: UserFitError: [training] fit raised " \
           "ValueError: this loop has no SGD" in status.stdout


def test_a_loop_that_always_fails_stops_the_run_in_one_line(tmp_path):
    write_modules(tmp_path)
    write_images(tmp_path / "images")
    path = tiny_config(tmp_path, "broken", "netmod:make_net", "folder:images",
                       '[training]\nfit = "fitmod:failing_fit"\nmetric = "top1"\n')
    run = _cli("run", str(path))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("safs-optuna: ") and "ValueError: the loop fell over" in last, run.stderr[-2000:]
