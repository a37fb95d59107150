"""The whole pipeline on the embedded data with tiny budgets: workers, resume, export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from safs_optuna.cli import main
from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline, results

from ._tiny import write_config

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safs_optuna.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def _trials(cfg, stage: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=f"{cfg.name}/{stage}", storage=cfg.storage)
    return study.get_trials(deepcopy=False)


def _chain(cfg) -> list[tuple]:
    """The finished search trials of every stage, in order: params and value."""
    out = []
    for stage in ("activations", "hpo", "hpo-relu"):
        out += [(stage, tuple(sorted(t.params.items())), t.state.name, t.value)
                for t in _trials(cfg, stage) if t.state.is_finished() and t.state.name != "FAIL"]
    return out


def _results(cfg) -> dict[str, float]:
    return {s: _trials(cfg, s)[-1].user_attrs["test_accuracy"]
            for s in ("dense", "baseline", "stage1", "stage2", "final")}


def test_two_workers_end_to_end_then_status_report_export(tmp_path, capsys):
    path = write_config(tmp_path)
    proc = _cli("run", str(path), "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| tiny (measured) |" in proc.stdout and "paper: lenet5 on mnist" in proc.stdout
    assert "w1]" in proc.stderr and "w2]" in proc.stderr  # both workers did work

    cfg = load_config(path)
    workers = set()
    for stage in ("dense", "sparse", "baseline", "activations", "hpo", "final", "hpo-relu", "stage1", "stage2"):
        trials = [t for t in _trials(cfg, stage) if t.state == optuna.trial.TrialState.COMPLETE]
        assert trials, stage
        workers |= {t.user_attrs["worker"] for t in trials}
        assert all("formulas" in t.user_attrs for t in trials)
        sparsity = {t.user_attrs["sparsity"] for t in trials}
        assert sparsity == {0.0} if stage == "dense" else min(sparsity) > 98.9, (stage, sparsity)
    assert workers == {1, 2}
    once = [t for s in ("dense", "sparse", "baseline", "final", "stage1", "stage2") for t in _trials(cfg, s)]
    assert len(once) == 6  # every "once" stage ran exactly once with two workers
    assert sum(t.state.is_finished() for t in _trials(cfg, "activations")) >= 3
    first = _trials(cfg, "activations")[0]
    assert set(first.params.values()) == {"relu"}  # LAHC starts from the all-ReLU baseline

    final = optuna.load_study(study_name="tiny/final", storage=cfg.storage)
    import optuna_dashboard

    note = optuna_dashboard.get_note(final)
    assert "| tiny (measured) |" in note and "/artifacts/" in note
    table = note.split("## Learned")[0].split("**Warning:**")[0]
    assert "—" not in table  # rewritten once the ablation columns finished
    assert len(optuna.artifacts.get_all_artifact_meta(final)) == 1  # the activation plot
    assert len(optuna.artifacts.get_all_artifact_meta(final.trials[0], storage=final._storage)) == 1  # checkpoint

    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count(" done ") + out.count(" NOTHING ") == 9  # a search may have found nothing, and say so
    assert "Density per layer after sparsity 0.99 (layer):" in out and "| `conv1` | 150 | " in out
    assert main(["report", str(path)]) == 0
    assert "tiny activations" in capsys.readouterr().out

    model_file = tmp_path / "out" / "model.pt2"
    assert main(["export", str(path), str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "sparsity 99" in out and "test accuracy" in out
    probe = (
        "import sys; sys.modules['safs_optuna'] = None\n"
        "import torch\n"
        f"m = torch.export.load({str(model_file)!r}).module()\n"
        "y = m(torch.randn(3, 1, 28, 28))\n"
        "assert tuple(y.shape) == (3, 10) and bool(torch.isfinite(y).all())\n"
        "w = [p for n, p in m.named_parameters() if n.endswith('weight') and p.dim() > 1]\n"
        "zeros = sum(int((p == 0).sum()) for p in w) / sum(p.numel() for p in w)\n"
        "assert zeros > 0.98, zeros\n"
        "print('ok')\n"
    )
    check = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                           cwd=tmp_path, env=ENV)
    assert check.stdout.strip() == "ok", check.stderr[-2000:]


def _slower_search(path: Path) -> Path:
    """Stage-1 candidates on half the training split, so that a run can be caught mid-trial."""
    head, sep, rest = path.read_text().partition("[activations]\n")
    path.write_text(head + sep + rest.replace("fraction = 0.1", "fraction = 0.5", 1))
    return path


def _interrupt_when(cmd: list[str], ready, sig: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "safs_optuna.cli", *cmd], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_as_if_never_stopped(tmp_path, sig):
    ref_path = _slower_search(write_config(tmp_path, trials=4, name="ref"))
    assert _cli("run", str(ref_path)).returncode == 0
    ref = load_config(ref_path)

    path = _slower_search(write_config(tmp_path, trials=4))
    cfg = load_config(path)

    def mid_stage1() -> bool:  # stop inside the activation search, with a trial running
        try:
            trials = _trials(cfg, "activations")
        except KeyError:
            return False
        states = [t.state.name for t in trials]
        return states.count("COMPLETE") + states.count("PRUNED") >= 2 and "RUNNING" in states

    _interrupt_when(["run", str(path)], mid_stage1, sig)
    before = [t for t in _trials(cfg, "activations") if t.state.name in ("COMPLETE", "PRUNED")]
    resumed = _cli("run", str(path))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]

    after = _trials(cfg, "activations")
    finished = [t for t in after if t.state.name in ("COMPLETE", "PRUNED")]
    assert [t.number for t in finished[: len(before)]] == [t.number for t in before]  # kept, not redone
    assert len(finished) == 4
    # the same chain of configurations and the same final numbers as the run that never stopped
    assert _chain(cfg) == _chain(ref)
    assert _results(cfg) == _results(ref)
    # one-shot stages were not trained twice
    assert len([t for t in _trials(cfg, "dense") if t.state.name == "COMPLETE"]) == 1


def test_config_change_on_resume_is_refused(tmp_path):
    path = write_config(tmp_path)
    cfg = load_config(path)
    Pipeline(cfg).studies.prepare()
    changed = load_config(path, {"sparsity.ratio": 0.9})
    with pytest.raises(Exception, match="sparsity.ratio"):
        Pipeline(changed).studies.prepare()
    # a bigger search budget is allowed: that is how a user extends a finished study
    Pipeline(load_config(path, {"activations.trials": 10})).studies.prepare()
    assert Path(cfg.storage.replace("sqlite:///", "")).exists()


def test_dense_checkpoint_is_used_instead_of_training(tmp_path):
    import torch

    import safs_optuna as so

    torch.manual_seed(1)
    dense = so.build_model("lenet5")
    torch.save(dense.state_dict(), tmp_path / "mine.pt")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[dense]\nepochs = 1", '[dense]\ncheckpoint = "mine.pt"'))
    cfg = load_config(path)
    pipe = Pipeline(cfg)
    pipe.studies.prepare()
    pipe._run_once(pipe.stages[0], pipe.studies.status(pipe.stages[0]))
    trial = _trials(cfg, "dense")[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["epochs"] == 0
    splits = so.data.load("quickstart")
    assert trial.value == pytest.approx(so.evaluate(so.make_searchable(dense), splits.val).accuracy)
    sparse = pipe.stages[1]  # pruned from the dense stage's checkpoint
    pipe._run_once(sparse, pipe.studies.status(sparse))
    assert torch.equal(pipe.res.sparse_model.get_submodule("conv1").weight_orig, dense.get_submodule("conv1").weight)

    wrong = tmp_path / "wrong.pt"
    torch.save(so.build_model("vgg16").state_dict(), wrong)
    bad = write_config(tmp_path, name="bad")
    bad.write_text(bad.read_text().replace("[dense]\nepochs = 1", '[dense]\ncheckpoint = "wrong.pt"'))
    proc = _cli("run", str(bad))
    assert proc.returncode == 1
    assert "wrong.pt does not fit model 'lenet5'" in proc.stderr and "Traceback" not in proc.stderr


def test_killed_worker_is_replaced_by_the_other(tmp_path):
    path = write_config(tmp_path, trials=6)
    cfg = load_config(path)
    proc = subprocess.Popen([sys.executable, "-m", "safs_optuna.cli", "run", str(path), "--workers", "2"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def searching() -> bool:
        try:
            return any(t.state.name == "RUNNING" for t in _trials(cfg, "activations"))
        except KeyError:
            return False

    deadline = time.time() + 300
    while time.time() < deadline and not searching():
        time.sleep(0.2)
    pid = subprocess.run(["pgrep", "-f", f"worker {path} .*--worker-id 2"], capture_output=True,
                         text=True).stdout.split()
    assert pid, "worker 2 not found"
    os.kill(int(pid[0]), signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "worker(s) 2 stopped early" in out
    for stage in ("dense", "sparse", "baseline", "final", "stage1", "stage2"):
        assert sum(t.state.name == "COMPLETE" for t in _trials(cfg, stage)) == 1, stage
    finished = [t for t in _trials(cfg, "activations") if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 6


def test_ctrl_c_on_a_terminal_stops_every_worker_in_one_line_and_the_run_resumes(tmp_path):
    """run --workers 2 on a terminal (a pty): Ctrl-C reaches the foreground process group; the
    terminal shows the live view and one line, Optuna's traceback goes to the log file."""
    import pty
    import select

    path = _slower_search(write_config(tmp_path, trials=6))
    cfg = load_config(path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own with the pty as its terminal
        # Ctrl-C's default action, as a shell gives its foreground job: a test run started in the
        # background of a non-interactive shell inherits SIGINT ignored, through exec.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(sys.executable, [sys.executable, "-m", "safs_optuna.cli", "run", str(path), "--workers", "2"], ENV)
    out = bytearray()

    def read(seconds: float) -> None:
        r, _, _ = select.select([fd], [], [], seconds)
        if r:
            try:
                out.extend(os.read(fd, 65536))
            except OSError:  # the terminal closed: the run ended
                pass

    def both_searching() -> bool:  # this process's worker too: Optuna logs its trial's failure
        try:
            return sum(t.state.name == "RUNNING" for t in _trials(cfg, "activations")) == 2
        except KeyError:
            return False

    status: list[int] = []

    def running() -> bool:  # the child not yet exited (reaped once, here)
        if not status:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status.append(code)
        return not status

    deadline = time.time() + 300
    while time.time() < deadline and running() and not both_searching():
        read(0.1)
    assert running(), "the run finished before both workers were seen in a trial: " + out.decode(errors="replace")[-1500:]
    os.killpg(os.getpgid(pid), signal.SIGINT)  # what the terminal's Ctrl-C does
    deadline = time.time() + 60
    while time.time() < deadline and running():
        read(0.1)
    for _ in range(20):
        read(0.05)
    text = out.decode(errors="replace")
    assert "interrupted; run the same command again to resume" in text, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", f"worker {path}"], capture_output=True, text=True).stdout
    assert not left, "a worker outlived the interrupted run"
    log = (tmp_path / "tiny.log").read_text()
    assert "KeyboardInterrupt" in log  # Optuna's lines about the stopped trials went here
    resumed = _cli("run", str(path), "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    finished = [t for t in _trials(cfg, "activations") if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6
    assert sum(t.state.name == "COMPLETE" for t in _trials(cfg, "final")) == 1


def _auto(path: Path) -> Path:
    """The tiny config with "auto" candidate epochs (ceiling: 3-epoch fine-tunes)."""
    text = path.read_text()
    head, sep, rest = text.partition("[activations]\n")
    rest = rest.replace("epochs = 1\n", 'epochs = "auto"\n', 1)
    path.write_text((head + sep + rest).replace("[final]\nepochs = 1", "[final]\nepochs = 3"))
    return path


def test_auto_epochs_are_recorded_and_a_killed_run_resumes_identically(tmp_path):
    ref_path = _slower_search(_auto(write_config(tmp_path, trials=4, name="ref")))
    assert _cli("run", str(ref_path)).returncode == 0
    ref = load_config(ref_path)
    study = optuna.load_study(study_name="ref/activations", storage=ref.storage)
    epochs = study.user_attrs["epochs"]
    assert 1 <= epochs <= 3 and study.user_attrs["epochs_reason"].startswith("auto:")
    start = _trials(ref, "activations")[0]
    assert start.user_attrs.get("start") and len(start.intermediate_values) == epochs
    assert all(len(t.intermediate_values) <= epochs for t in _trials(ref, "activations"))

    path = _slower_search(_auto(write_config(tmp_path, trials=4)))
    cfg = load_config(path)

    def mid_stage1() -> bool:
        try:
            states = [t.state.name for t in _trials(cfg, "activations")]
        except KeyError:
            return False
        return states.count("COMPLETE") + states.count("PRUNED") >= 2 and "RUNNING" in states

    _interrupt_when(["run", str(path)], mid_stage1, signal.SIGKILL)
    assert _cli("run", str(path)).returncode == 0
    resumed = optuna.load_study(study_name="tiny/activations", storage=cfg.storage)
    assert resumed.user_attrs["epochs"] == epochs
    assert _chain(cfg) == _chain(ref) and _results(cfg) == _results(ref)
    proc = _cli("status", str(path))
    assert f"activations epochs: {study.user_attrs['epochs_reason']}" in proc.stdout


def test_two_seeds_report_mean_and_sd(tmp_path):
    path = write_config(tmp_path)
    proc = _cli("run", str(path), "--seeds", "0,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny/seed0 (measured)" in proc.stdout and "tiny/seed1 (measured)" in proc.stdout
    assert "tiny: mean ± sd over 2 seeds" in proc.stdout
    cfg = load_config(path)
    seeds = {}
    for seed in (0, 1):
        trials = optuna.load_study(study_name=f"tiny/seed{seed}/final", storage=cfg.storage).trials
        seeds[seed] = trials[0].user_attrs["test_accuracy"]
    report = _cli("report", str(path), "--seeds", "0,1")
    assert report.returncode == 0, report.stderr
    row = next(line for line in report.stdout.splitlines() if "mean ± sd" in line)
    mean = (seeds[0] + seeds[1]) / 2
    sd = abs(seeds[0] - seeds[1]) / 2 ** 0.5
    assert f"{mean:.2f} ± {sd:.2f}" in row.split("|")[6]  # the SAFS column
    status = _cli("status", str(path), "--seeds", "1")
    assert "tiny/seed1" in status.stdout and "tiny/seed0" not in status.stdout


def test_a_new_stage1_winner_reruns_what_used_the_old_one(tmp_path):
    from optuna.trial import TrialState, create_trial

    path = write_config(tmp_path)
    assert _cli("run", str(path)).returncode == 0
    cfg = load_config(path)
    pipe = Pipeline(cfg, log=lambda msg: None)
    old = pipe.studies.status("activations").best_trial
    # A user grows the search and it finds a better set of activations after stage 2 used the old one.
    study = optuna.load_study(study_name="tiny/activations", storage=cfg.storage)
    params = {k: ("tanh" if v != "tanh" else "elu") for k, v in old.params.items()}
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=90.0, params=params, distributions=old.distributions,
        intermediate_values={0: 90.0}, user_attrs={**old.user_attrs, "val_loss": [0.1], "start": False}))
    grown = _cli("run", str(path), "--set", "activations.trials=4")
    assert grown.returncode == 0, grown.stderr[-3000:]
    new = Pipeline(cfg, log=lambda msg: None)
    winner = new.studies.status("activations").best_trial
    assert winner.number != old.number and winner.params == params
    hpo = new.studies.status("hpo")
    assert hpo.done and hpo.superseded == 3  # the earlier stage-2 trials are kept, not counted
    assert hpo.best_trial.user_attrs["inputs"] == {"activations": winner.number}
    final = new.studies.status("final").best_trial
    assert final.user_attrs["inputs"] == {"activations": winner.number, "hpo": hpo.best_trial.number}
    assert new.studies.status("stage1").best_trial.user_attrs["inputs"] == {"activations": winner.number}
    assert len([t for t in _trials(cfg, "final") if t.state == TrialState.COMPLETE]) == 2
    # the report's columns all come from the new winners
    row = results.row(new)
    assert row.values[4] == final.user_attrs["test_accuracy"]
    assert row.values[2] == new.studies.status("stage1").best_trial.user_attrs["test_accuracy"]


def test_a_lost_checkpoint_names_the_stage_and_rerun_restores_it(tmp_path):
    path = write_config(tmp_path)
    assert _cli("run", str(path)).returncode == 0
    cfg = load_config(path)
    final = [t for t in _trials(cfg, "final") if t.state.name == "COMPLETE"][0]
    artifact = Path(cfg.artifacts) / final.user_attrs["checkpoint"]
    artifact.unlink()
    proc = _cli("export", str(path), str(tmp_path / "m.pt2"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "stage 'final'" in line and "--rerun final" in line
    rerun = _cli("run", str(path), "--rerun", "final")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len([t for t in _trials(cfg, "final") if t.state.name == "COMPLETE"]) == 2
    assert _cli("export", str(path), str(tmp_path / "m.pt2")).returncode == 0
    bad = _cli("run", str(path), "--rerun", "activations")
    assert bad.returncode == 1 and "not a stage that runs once; valid: dense, sparse, baseline" in bad.stderr


def test_min_density_keeps_a_layer_denser_and_the_total_on_target(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('scope = "layer"', 'scope = "global"\nmin_density = { conv1 = 0.5 }')
                    .replace('name = "tiny"', 'name = "tiny"\nablations = false', 1))
    assert _cli("run", str(path)).returncode == 0
    cfg = load_config(path)
    baseline = _trials(cfg, "baseline")[0]
    total, kept = baseline.user_attrs["layer_density"]["conv1"]
    assert kept >= 50.0 and baseline.user_attrs["sparsity"] > 98.9
    status = _cli("status", str(path)).stdout
    assert "after sparsity 0.99 (global, conv1 keeps ≥ 50 %)" in status and "| `conv1` |" in status


def test_relu_with_the_same_compute_is_a_column_of_the_report(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("threads = 1", "threads = 1\nbaseline_long = true\nablations = false"))
    proc = _cli("run", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config(path)
    (long,) = [t for t in _trials(cfg, "baseline-long") if t.state.name == "COMPLETE"]
    searched = sum(len(t.intermediate_values) * t.user_attrs["train_images"]
                   for stage in ("activations", "hpo") for t in _trials(cfg, stage) if t.state.is_finished())
    full = long.user_attrs["train_images"]
    assert long.user_attrs["epochs"] == max(1, round(searched / full)) == long.user_attrs["trained_epochs"]
    assert long.user_attrs["formulas"] == _trials(cfg, "baseline")[0].user_attrs["formulas"]  # its own activations
    report = _cli("report", str(path))
    assert report.returncode == 0, report.stderr
    head, _, row = [line for line in report.stdout.splitlines() if line.startswith("|")][:3]
    assert head.split("|")[-2].strip() == "ReLU, same compute"
    assert row.split("|")[-2].strip() == f"{long.user_attrs['test_accuracy']:.2f}"
    assert "ReLU, same compute" in _cli("status", str(path)).stdout  # its compute, in the compute line
