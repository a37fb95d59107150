"""The cluster recipes in examples/cluster are well formed and start workers the CLI accepts:
the SLURM script passes `bash -n` and, run with a stand-in `safs-optuna`, asks for a worker with
valid arguments; the Kubernetes Job parses, and its pods' command does the same; both studies are
valid configs."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from safs_optuna.cli import build_parser
from safs_optuna.config import load_config, parse_config

CLUSTER = Path(__file__).resolve().parents[1] / "examples" / "cluster"


def _stand_in(tmp_path: Path) -> dict[str, str]:
    """PATH with a `safs-optuna` that writes its arguments to args.txt instead of working."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "safs-optuna"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(tmp_path / "args.txt"))}\n')
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _worker_args(tmp_path: Path) -> list[str]:
    args = (tmp_path / "args.txt").read_text().splitlines()
    parsed = build_parser().parse_args(args)  # exits (SystemExit) on an argument the CLI lacks
    assert parsed.command == "worker"
    return args


def test_slurm_array_script(tmp_path):
    script = CLUSTER / "slurm_array.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "#SBATCH --array=" in text and "#SBATCH --gres=gpu:1" in text
    env = {**_stand_in(tmp_path), "SLURM_ARRAY_TASK_ID": "3", "SLURM_CPUS_PER_TASK": "8"}
    subprocess.run(["bash", str(script)], check=True, env=env, cwd=CLUSTER)
    args = _worker_args(tmp_path)
    assert args[:2] == ["worker", "study.toml"]
    assert " ".join(args[2:]) == "--device cuda --threads 8 --worker-id 3"
    cfg = load_config(CLUSTER / "study.toml")
    assert cfg.storage.startswith("postgresql://") and cfg.artifacts.startswith("s3://")
    assert ":" not in cfg.storage.split("//")[1].split("@")[0]  # no password in the file


def test_kubernetes_job(tmp_path):
    docs = list(yaml.safe_load_all((CLUSTER / "job.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "Job"}
    study = tomllib.loads(kinds["ConfigMap"]["data"]["study.toml"])
    cfg = parse_config(study)
    assert cfg.artifacts.startswith("s3://") and cfg.storage.startswith("postgresql://")
    assert ":" not in cfg.storage.split("//")[1].split("@")[0]  # no password in the ConfigMap
    # The same study as the SLURM recipe's, but for the database's host name.
    slurm = tomllib.loads((CLUSTER / "study.toml").read_text())
    assert {k: v for k, v in study.items() if k != "storage"} == {k: v for k, v in slurm.items() if k != "storage"}

    spec = kinds["Job"]["spec"]
    assert spec["parallelism"] == spec["completions"] > 1
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    mount = container["volumeMounts"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]

    # The pod's command, run by sh as Kubernetes does, for the first pod of the Job.
    env = {**_stand_in(tmp_path), "JOB_COMPLETION_INDEX": "0"}
    subprocess.run([*container["command"], *container["args"]], check=True, env=env)
    args = _worker_args(tmp_path)
    assert args[1] == f"{mount['mountPath']}/study.toml" and args[-2:] == ["--worker-id", "1"]
    names = {e["name"] for e in container.get("env", [])}
    assert not names & {"PGPASSWORD", "AWS_SECRET_ACCESS_KEY"}  # secrets only from the Secret
