"""`safs-optuna dashboard` serves optuna-dashboard on the study's storage."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from safs_optuna.config import load_config
from safs_optuna.pipeline import Pipeline

from ._tiny import write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dashboard_serves_the_study_stages(tmp_path):
    path = write_config(tmp_path)
    Pipeline(load_config(path)).studies.prepare()  # studies exist; nothing trained
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "safs_optuna.cli", "dashboard", str(path),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        names, deadline = None, time.time() + 60
        while names is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    names = {s["study_name"] for s in json.load(r)["study_summaries"]}
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        assert names is not None, "the dashboard did not answer within 60 s"
        assert {"tiny/dense", "tiny/activations", "tiny/hpo", "tiny/final"} <= names
    finally:
        proc.terminate()
        proc.wait(timeout=30)
