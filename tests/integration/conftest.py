"""S3 for integration tests: a real HTTP endpoint (moto server) on loopback.

A real server rather than in-process mocking, because what reads datasets in production may be
another process (Ray workers) that an in-process patch would not reach.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

_AWS_VARS_TO_CLEAR = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                      "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_REGION")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """One moto server for the session on an OS-chosen free port; stopped at the end."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_endpoint(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Fake credentials and the moto endpoint in the environment, restored after the test.

    Per test (not per session) so no fake AWS settings leak into unrelated tests; the shared
    AWS config files are pointed away so a developer's ~/.aws cannot interfere.
    """
    for var in _AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("DCKD_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("DCKD_CACHE_DIR", str(tmp_path / "s3-cache"))
    return s3_server


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the shared server (tests never see each other's objects)."""
    name = f"dckd-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name
