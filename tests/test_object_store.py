"""Artifacts in an object store: ``artifacts = "s3://bucket/prefix"`` against an S3-compatible
server on the loopback (moto's server mode), from one call up to two workers killed and resumed.
Credentials come from the environment only and never reach the storage, a log or ``status``."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import optuna
import pytest
from optuna.artifacts.exceptions import ArtifactNotFound

from safs_optuna import storage_retry
from safs_optuna.cli import main
from safs_optuna.storage import ArtifactStoreError, StorageError, check_artifacts, make_artifact_store

from ._tiny import write_config

SECRET = "S3cr3t-K3y-9f2c7e"  # distinctive, so that any echo of it is found
KEY_ID = "AKIASAFSTESTKEY01"
BUCKET = "safs-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port; yields its port."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield server, port
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The environment a user sets for an S3-compatible server, and a fresh bucket."""
    import boto3

    server, port = s3_server
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": KEY_ID,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(storage_retry, "_outages", {})
    client = boto3.client("s3")
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    return client


def _keys(client) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_write_read_remove_under_the_prefix(s3):
    store = make_artifact_store(f"s3://{BUCKET}/runs/a")
    store.write("x.pt", io.BytesIO(b"weights"))
    assert _keys(s3) == ["runs/a/x.pt"]
    with store.open_reader("x.pt") as f:
        assert f.read() == b"weights"
    store.remove("x.pt")
    assert _keys(s3) == []
    with pytest.raises(ArtifactNotFound):
        store.open_reader("x.pt")


def test_an_unwritable_bucket_is_one_line_naming_it(s3):
    check_artifacts(f"s3://{BUCKET}/p")  # writable: nothing said, nothing left behind
    assert _keys(s3) == []
    with pytest.raises(ArtifactStoreError) as err:
        check_artifacts("s3://no-such-bucket-here/p", retry_seconds=0)
    text = str(err.value)
    assert "'no-such-bucket-here'" in text and "NoSuchBucket" in text and "\n" not in text
    assert SECRET not in text and KEY_ID not in text


def test_missing_boto3_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(StorageError) as err:
        make_artifact_store(f"s3://{BUCKET}/p")
    assert 'pip install "safs-optuna[s3]"' in str(err.value)


def test_an_object_store_outage_is_waited_out(s3_server, s3, caplog, monkeypatch):
    from moto.server import ThreadedMotoServer

    server, port = s3_server
    monkeypatch.setattr(storage_retry, "MAX_PAUSE", 0.3)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # boto3's own retries would hide a short outage
    store = make_artifact_store(f"s3://{BUCKET}/p", retry_seconds=60)
    server.stop()
    back = threading.Timer(2.0, lambda: ThreadedMotoServer(ip_address="127.0.0.1", port=port,
                                                             verbose=False).start())
    back.start()
    try:
        with caplog.at_level(logging.WARNING, logger="safs_optuna.storage"):
            store.write("y.pt", io.BytesIO(b"after the outage"))
    finally:
        back.join()
    with store.open_reader("y.pt") as f:
        assert f.read() == b"after the outage"
    lines = [r.getMessage() for r in caplog.records if r.name == "safs_optuna.storage"]
    assert len(lines) == 2 and "connection lost" in lines[0] and "connection back" in lines[1], lines
    assert f"artifact store s3://{BUCKET}/p" in lines[0]


def test_status_names_a_bucket_it_cannot_write(s3, tmp_path, capsys):
    cfg = write_config(tmp_path)
    from safs_optuna.config import load_config
    from safs_optuna.pipeline import Pipeline

    Pipeline(load_config(cfg)).studies.prepare()
    assert main(["status", str(cfg), "--set", "artifacts=s3://no-such-bucket-here/x"]) == 1
    out = capsys.readouterr()
    assert "cannot write to bucket 'no-such-bucket-here'" in out.err
    assert SECRET not in out.out + out.err


# ------------------------------------------------------------ the whole pipeline
def _searching(db) -> bool:
    """Inside the activation search: a candidate finished and another is running."""
    if not db.exists():  # not opened here first: this would write the schema
        return False
    try:
        study = optuna.load_study(study_name="tiny/activations", storage=f"sqlite:///{db}")
    except KeyError:
        return False
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return states.count("COMPLETE") + states.count("PRUNED") >= 1 and "RUNNING" in states


@pytest.mark.slow
def test_two_workers_on_s3_killed_and_resumed(s3, tmp_path):
    cfg = write_config(tmp_path, trials=4)
    url = f"s3://{BUCKET}/studies/tiny"
    text = cfg.read_text().replace('threads = 1', f'threads = 1\nartifacts = "{url}"', 1)
    cfg.write_text(text)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "safs_optuna.cli", "run", str(cfg), "--workers", "2"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not _searching(tmp_path / "tiny.db"):
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # every worker, as a lost machine
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert any(k.startswith("studies/tiny/") for k in _keys(s3))  # the checkpoints went to the bucket

    second = subprocess.run([sys.executable, "-m", "safs_optuna.cli", "run", str(cfg), "--workers", "2"],
                            capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "| tiny (measured) |" in second.stdout

    status = subprocess.run([sys.executable, "-m", "safs_optuna.cli", "status", str(cfg)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr[-3000:]
    outputs = log.read_text() + second.stdout + second.stderr + status.stdout + status.stderr
    assert SECRET not in outputs and KEY_ID not in outputs
    assert not (tmp_path / "tiny.artifacts").exists()  # nothing on the local disk
    assert SECRET.encode() not in (tmp_path / "tiny.db").read_bytes()
    assert KEY_ID.encode() not in (tmp_path / "tiny.db").read_bytes()

    # Every checkpoint a finished stage names is in the bucket, under the prefix.
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'tiny.db'}")
    keys = set(_keys(s3))
    named = [t.user_attrs["checkpoint"] for s in optuna.get_all_study_names(storage)
             for t in optuna.load_study(study_name=s, storage=storage).get_trials(deepcopy=False)
             if t.state == optuna.trial.TrialState.COMPLETE and "checkpoint" in t.user_attrs]
    assert named and all(f"studies/tiny/{a}" in keys for a in named)

    # The dashboard serves an artifact from the bucket.
    port = _free_port()
    dash = subprocess.Popen([sys.executable, "-m", "safs_optuna.cli", "dashboard", str(cfg), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, text=True)
    try:
        study = optuna.load_study(study_name="tiny/final", storage=storage)
        trial = next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
        artifact = trial.user_attrs["checkpoint"]
        body, deadline = None, time.time() + 60
        while body is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/artifacts/{study._study_id}/"
                                            f"{trial._trial_id}/{artifact}", timeout=10) as r:
                    body = r.read()
            except OSError:
                assert dash.poll() is None, dash.stdout.read()
                time.sleep(0.5)
        assert body == s3.get_object(Bucket=BUCKET, Key=f"studies/tiny/{artifact}")["Body"].read()
    finally:
        dash.terminate()
        dash.wait(timeout=30)


def test_gcs_bucket_names_its_extra_and_keeps_artifacts_under_the_prefix(monkeypatch):
    from safs_optuna.object_store import BucketArtifactStore

    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(StorageError) as err:
        make_artifact_store("gs://safs-test/p")
    assert 'pip install "safs-optuna[gcs]"' in str(err.value)

    class Backend:  # GCSArtifactStore's interface, in memory
        def __init__(self):
            self.objects = {}

        def open_reader(self, key):
            if key not in self.objects:
                raise ArtifactNotFound(key)
            return io.BytesIO(self.objects[key])

        def write(self, key, body):
            self.objects[key] = body.read()

        def remove(self, key):
            del self.objects[key]

    backend = Backend()
    store = BucketArtifactStore("gs://safs-test/runs/", backend)
    store.write("a.pt", io.BytesIO(b"1"))
    assert backend.objects == {"runs/a.pt": b"1"}
    with store.open_reader("a.pt") as f:
        assert f.read() == b"1"
    store.check_writable()
    assert list(backend.objects) == ["runs/a.pt"]


@pytest.mark.parametrize("url", ["s3://Bad_Bucket/x", "s3:///x", "ftp://bucket/x"])
def test_a_malformed_bucket_url_names_the_valid_forms(url):
    with pytest.raises(StorageError) as err:
        make_artifact_store(url)
    assert "s3://bucket/prefix" in str(err.value)


def test_the_config_keeps_a_bucket_url_and_refuses_other_schemes(tmp_path):
    from safs_optuna.config import ConfigError, parse_config

    assert parse_config({"name": "x", "artifacts": "s3://my-bucket/a/b"}).artifacts == "s3://my-bucket/a/b"
    assert parse_config({"name": "x", "artifacts": "gs://my-bucket"}).artifacts == "gs://my-bucket"
    with pytest.raises(ConfigError, match="artifacts: unknown artifact store scheme 'ftp'.*valid: s3://bucket"):
        parse_config({"name": "x", "artifacts": "ftp://host/x"})
