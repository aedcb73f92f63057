"""Fixtures for the cloud tests: a real GCS emulator over HTTP and throwaway service-account keys."""

from __future__ import annotations

import os

# Before anything imports gcsfs (see substratus.cloud.gcp): experimental HNS probing hangs here.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import json
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

EMULATOR_BUCKET = "substratus-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of an in-memory gcp-storage-emulator with bucket EMULATOR_BUCKET."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()  # serves from its own thread
    endpoint = f"http://127.0.0.1:{port}"
    req = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=test", method="POST",
        data=json.dumps({"name": EMULATOR_BUCKET}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def service_account_info(rsa_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """A service-account key file's content with a throwaway key (never valid against Google)."""
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {
        "type": "service_account",
        "project_id": "substratus-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "signer@substratus-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
