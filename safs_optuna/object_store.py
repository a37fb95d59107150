"""Artifact stores in object storage, so that workers on many machines need no shared disk.

``artifacts = "s3://bucket/prefix"`` keeps checkpoints and plots in an S3 bucket, or in any
S3-compatible server (MinIO, Ceph, R2…), through Optuna's ``Boto3ArtifactStore`` (the ``s3``
extra: ``pip install "safs-optuna[s3]"``); ``gs://bucket/prefix`` in Google Cloud Storage through
``GCSArtifactStore`` (the ``gcs`` extra). Where the server is and who may write come from the
client libraries' usual environment only — ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws``; for GCS,
``GOOGLE_APPLICATION_CREDENTIALS`` or the machine's account — so nothing secret is written into
the config, the storage or a log line.
"""

from __future__ import annotations

import importlib
import re
import tempfile
import uuid
from typing import Any, BinaryIO

from optuna.artifacts.exceptions import ArtifactNotFound

__all__ = ["SCHEMES", "BucketArtifactStore", "is_bucket_url", "is_lost_bucket", "open_bucket", "parse_bucket_url"]

SCHEMES = {"s3": ("boto3", 'pip install "safs-optuna[s3]"'),
           "gs": ("google.cloud.storage", 'pip install "safs-optuna[gcs]"')}
"""URL scheme -> (the client module it needs, how to install it)."""

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)/?(.*)")
# Downloads are read whole before they are handed on (so that a connection lost half-way is
# retried as a whole); up to this many bytes in memory, the rest in a temporary file.
_SPOOL_BYTES = 64 << 20
# Object store answers that a later try may not get (rate limits, a server busy or restarting).
_BUSY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable",
               "InternalError", "RequestTimeTooSkewed"}
_LOST_NAMES = {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
               "ProxyConnectionError", "ServiceUnavailable", "InternalServerError", "TooManyRequests",
               "GatewayTimeout", "BadGateway", "RetryError"}


def is_bucket_url(location: str) -> bool:
    """Whether an ``artifacts`` value names an object store (``s3://``, ``gs://``), not a folder."""
    match = _URL.fullmatch(location)
    return match is not None and match.group(1).lower() in SCHEMES


def parse_bucket_url(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket, prefix)`` of ``s3://bucket/prefix``; ValueError naming the valid forms."""
    match = _URL.fullmatch(url)
    valid = "s3://bucket/prefix or gs://bucket/prefix (the prefix is optional), or a folder"
    if match is None:
        raise ValueError(f"expected {valid}, got {url!r}")
    scheme, bucket, prefix = match.group(1).lower(), match.group(2), match.group(3).strip("/")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown artifact store scheme {match.group(1)!r} in {url!r}; valid: {valid}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", bucket):
        raise ValueError(f"{url!r}: {bucket!r} is not a bucket name (3-63 lowercase letters, digits, '.', "
                         "'-' and '_'); expected " + valid)
    return scheme, bucket, prefix


class BucketArtifactStore:
    """Optuna's ``Boto3ArtifactStore`` or ``GCSArtifactStore``, under a key prefix.

    Artifact ``id`` is the object ``<prefix>/<id>``, so that several studies can share a bucket.
    A missing object stays Optuna's ``ArtifactNotFound``; other failures are the client's own
    errors (:func:`is_lost_bucket` tells those worth another try).

    Args:
        url: ``s3://bucket/prefix`` or ``gs://bucket/prefix``.
        backend: The Optuna store of that bucket (built from the environment by :func:`open_bucket`).
    """

    def __init__(self, url: str, backend: Any) -> None:
        self.base_path = url  # how messages name the store, as FolderArtifactStore's folder
        self.scheme, self.bucket, self.prefix = parse_bucket_url(url)
        self._backend = backend

    def key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}" if self.prefix else artifact_id

    def open_reader(self, artifact_id: str) -> BinaryIO:
        body = self._backend.open_reader(self.key(artifact_id))
        copy = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
        try:
            while chunk := body.read(1 << 20):
                copy.write(chunk)
        except BaseException:
            copy.close()
            raise
        finally:
            body.close()
        copy.seek(0)
        return copy  # type: ignore[return-value]

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._backend.write(self.key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self._backend.remove(self.key(artifact_id))

    def check_writable(self) -> None:
        """Write and remove a small object under the prefix; the client's error if it cannot."""
        import io

        probe = f".safs-write-check-{uuid.uuid4().hex}"
        self.write(probe, io.BytesIO(b"safs-optuna can write here\n"))
        self.remove(probe)


def open_bucket(url: str) -> BucketArtifactStore:
    """The artifact store of ``url``, its client configured from the environment.

    Raises:
        ImportError: With the ``pip install`` line, when the client library is missing.
        ValueError: A malformed URL, naming the valid forms.
    """
    scheme, bucket, _ = parse_bucket_url(url)
    module, install = SCHEMES[scheme]
    try:
        importlib.import_module(module)
    except ImportError:
        raise ImportError(f"artifacts {url!r} needs the Python package {module.split('.')[0]!r}: "
                          f"{install}") from None
    if scheme == "s3":
        import boto3
        from optuna.artifacts import Boto3ArtifactStore

        # boto3 reads AWS_ENDPOINT_URL(_S3), the region and the credentials from the environment.
        return BucketArtifactStore(url, Boto3ArtifactStore(bucket, boto3.client("s3")))
    from optuna.artifacts import GCSArtifactStore

    return BucketArtifactStore(url, GCSArtifactStore(bucket))


def is_lost_bucket(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is an object store that could not be reached, was busy or
    restarting — worth another try — rather than a refusal (no bucket, no permission)."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and not any(e is s for s in seen):
        seen.append(e)
        if isinstance(e, ArtifactNotFound):
            return False
        if type(e).__name__ in _LOST_NAMES:
            return True
        response = getattr(e, "response", None)
        if isinstance(response, dict):  # botocore's ClientError
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = response.get("Error", {}).get("Code")
            if status >= 500 or code in _BUSY_CODES:
                return True
        e = e.__cause__ or e.__context__
    return False


def describe_failure(exc: BaseException) -> str:
    """A client error in a few words, without anything secret (botocore's and google's messages
    name the bucket, the key and the operation, never a credential)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        error = response["Error"]
        return f"{error.get('Code', '')}: {error.get('Message', '')}".strip(": ")
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in "
                "the environment)")
    if name == "DefaultCredentialsError":
        return "no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS in the environment)"
    text = str(exc).strip().splitlines()
    return f"{name}: {text[0]}" if text else name
