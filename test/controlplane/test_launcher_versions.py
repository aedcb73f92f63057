"""The launcher reads the kube-apiserver binary's version and passes only flags it accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from substratus.testing.controlplane import (
    ENV_APISERVER,
    ENV_ETCD,
    ControlPlane,
    ControlPlaneError,
    ControlPlaneNotInstalled,
    KubeVersion,
    apiserver_version_flags,
    binary_version,
    find_binaries,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("Kubernetes v1.20.2\n", KubeVersion(1, 20, 2)),
    ("Kubernetes v1.36.2-dirty", KubeVersion(1, 36, 2)),
    ("Kubernetes v1.31.0-rc.1+k3s1", KubeVersion(1, 31, 0)),
    ("Kubernetes v1.29", KubeVersion(1, 29, 0)),
])
def test_version_parsing(text: str, expected: KubeVersion) -> None:
    assert KubeVersion.parse(text) == expected


def test_version_ordering_is_numeric() -> None:
    assert KubeVersion(1, 9) < KubeVersion(1, 20) < KubeVersion(1, 24) <= KubeVersion(1, 24, 0) < KubeVersion(2, 0)
    with pytest.raises(ValueError, match="no Kubernetes version"):
        KubeVersion.parse("flag provided but not defined: -version")


@pytest.mark.parametrize(("version", "has_insecure_port"), [
    (KubeVersion(1, 20, 2), True), (KubeVersion(1, 23, 17), True),
    (KubeVersion(1, 24, 0), False), (KubeVersion(1, 36, 2), False),
])
def test_insecure_port_only_before_1_24(version: KubeVersion, has_insecure_port: bool) -> None:
    # 1.24 removed --insecure-port: passing it there is "unknown flag" and the server exits.
    assert ("--insecure-port=0" in apiserver_version_flags(version)) is has_insecure_port


def _fake_binary(path: Path, version_line: str) -> Path:
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(0o755)
    return path


def test_environment_selects_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apiserver = _fake_binary(tmp_path / "my-apiserver", "Kubernetes v1.36.2")
    etcd = _fake_binary(tmp_path / "my-etcd", "etcd Version: 3.5.21")
    monkeypatch.setenv(ENV_APISERVER, str(apiserver))
    monkeypatch.setenv(ENV_ETCD, str(etcd))
    found = find_binaries()
    assert (found["kube-apiserver"], found["etcd"]) == (apiserver, etcd)
    assert binary_version(found["kube-apiserver"]) == KubeVersion(1, 36, 2)
    # An explicit directory is exactly that directory.
    with pytest.raises(ControlPlaneNotInstalled):
        find_binaries(tmp_path / "empty")


def test_environment_naming_a_missing_binary_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_APISERVER, str(tmp_path / "nope"))
    with pytest.raises(ControlPlaneNotInstalled, match=f"{ENV_APISERVER}=.*nope: not an executable file"):
        find_binaries()


def test_unreadable_version_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ControlPlaneError, match="cannot read the version"):
        binary_version(_fake_binary(tmp_path / "x", "no version here"))


async def test_running_server_reports_the_binary_version(local_controlplane: ControlPlane,
                                                         api_client: ApiClient) -> None:
    info = await client.VersionApi(api_client).get_code()
    assert local_controlplane.version is not None
    assert KubeVersion.parse(info.git_version) == local_controlplane.version
    if os.environ.get(ENV_APISERVER):
        assert local_controlplane.version == binary_version(Path(os.environ[ENV_APISERVER]))
