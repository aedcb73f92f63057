"""Operator configuration: every flag is also a ``SUBSTRATUS_*`` environment variable.

Flags win over the environment, the environment over defaults — so a Deployment can set
everything through env (``envFrom`` a ConfigMap) and a developer can override on the command line.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import attrs

# Google archived kaniko in 2025; Chainguard maintains the fork most clusters moved to. The
# debug variant: a git build's tag is the commit its clone step resolved, so the executor is
# started by the image's busybox shell (/busybox/sh) once that commit is known (SPEC §6).
DEFAULT_KANIKO_IMAGE = "ghcr.io/chainguard-dev/kaniko/executor:debug"
DEFAULT_GIT_IMAGE = "alpine/git:2.45.2"


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the flag and its environment variable."""


def _name(field: str) -> str:
    return f"--{field.replace('_', '-')} ({OperatorConfig.env_name(field)})"


@attrs.define
class OperatorConfig:
    cluster_name: str = attrs.field(default="substratus-1", metadata={"help": "Cluster name, part of storage hashes and image names."})
    cloud: str = attrs.field(default="local", metadata={"help": "Cloud integration: local or gcp.", "choices": ("local", "gcp")})
    bucket_url: str = attrs.field(default="", metadata={"help": "Artifact bucket, e.g. gs://my-bucket or file:///var/lib/substratus/artifacts."})
    registry: str = attrs.field(default="registry.substratus.svc.cluster.local:5000", metadata={"help": "Registry that built images are pushed to."})
    namespace: str = attrs.field(default="", metadata={"help": "Only watch this namespace (default: all)."})
    kubeconfig: str = attrs.field(default="", metadata={"help": "Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)."})
    leader_elect: bool = attrs.field(default=False, metadata={"help": "Enable leader election (run several replicas)."})
    leader_election_namespace: str = attrs.field(default="substratus", metadata={"help": "Namespace of the leader-election Lease."})
    leader_election_id: str = attrs.field(default="substratus-leader", metadata={"help": "Name of the leader-election Lease."})
    leader_election_lease_duration: int = attrs.field(default=15, metadata={"help": "Seconds a standby waits after the leader's last renewal before taking over."})
    leader_election_renew_deadline: int = attrs.field(default=10, metadata={"help": "Seconds the leader keeps trying to renew before it gives up leading."})
    leader_election_retry_period: int = attrs.field(default=2, metadata={"help": "Seconds between leader-election attempts."})
    metrics_bind_address: str = attrs.field(default=":8080", metadata={"help": "Prometheus /metrics address; 0 disables."})
    metrics_secure: bool = attrs.field(default=False, metadata={"help": "Serve /metrics over HTTPS to callers allowed `get` on the non-resource URL /metrics (TokenReview + SubjectAccessReview)."})
    metrics_cert_dir: str = attrs.field(default="", metadata={"help": "Directory with tls.crt and tls.key for --metrics-secure (default: a self-signed certificate)."})
    health_probe_bind_address: str = attrs.field(default=":8081", metadata={"help": "/healthz and /readyz address; 0 disables."})
    upload_bind_address: str = attrs.field(default=":8082", metadata={"help": "local cloud: signed-URL upload endpoint address."})
    upload_base_url: str = attrs.field(default="", metadata={"help": "local cloud: externally reachable base URL of the upload endpoint."})
    max_concurrent_reconciles: int = attrs.field(default=64, metadata={"help": "Workers per controller (64: measured, docs/operations.md)."})
    object_count_interval: int = attrs.field(default=15, metadata={"help": "Seconds between refreshes of the substratus_objects metric."})
    log_level: str = attrs.field(default="info", metadata={"help": "debug, info, warning or error.", "choices": ("debug", "info", "warning", "error")})
    log_format: str = attrs.field(default="text", metadata={"help": "text (key=value) or json.", "choices": ("text", "json")})
    kaniko_image: str = attrs.field(default=DEFAULT_KANIKO_IMAGE, metadata={"help": "Image of the kaniko executor used by build Jobs (a debug variant: git builds need /busybox/sh)."})
    git_image: str = attrs.field(default=DEFAULT_GIT_IMAGE, metadata={"help": "Image used to clone git sources for builds."})
    runtime_class: str = attrs.field(default="", metadata={"help": "RuntimeClass for workloads (e.g. gvisor); empty for none."})
    gcp_project: str = attrs.field(default="", metadata={"help": "gcp cloud: project id (Workload Identity, signing)."})
    gcp_service_account: str = attrs.field(default="", metadata={"help": "gcp cloud: GSA the workloads' KSA is bound to."})
    upload_url_ttl: int = attrs.field(default=3600, metadata={"help": "Seconds a signed upload URL stays valid."})
    upload_signing_key: str = attrs.field(default="", metadata={"help": "local cloud: HMAC key for upload URLs (default: random per process)."})

    @staticmethod
    def env_name(field: str) -> str:
        return "SUBSTRATUS_" + field.upper()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in attrs.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            help_text = f"{f.metadata.get('help', '')} [env {cls.env_name(f.name)}, default {f.default!r}]"
            if f.type in (bool, "bool"):
                parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                                    help=help_text)
            else:
                kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
                if f.type in (int, "int"):
                    kwargs["type"] = int
                if "choices" in f.metadata:
                    kwargs["choices"] = f.metadata["choices"]
                parser.add_argument(flag, **kwargs)

    @classmethod
    def from_sources(cls, args: argparse.Namespace | None = None,
                     environ: dict[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in attrs.fields(cls):
            cli = getattr(args, f.name, None) if args is not None else None
            if cli is not None:
                values[f.name] = cli
                continue
            raw = env.get(cls.env_name(f.name))
            if raw is None:
                continue
            var = cls.env_name(f.name)
            if f.type in (bool, "bool"):
                word = raw.strip().lower()
                if word not in TRUE_WORDS + FALSE_WORDS:
                    raise ConfigError(f"{var}={raw!r}: expected true or false")
                values[f.name] = word in TRUE_WORDS
            elif f.type in (int, "int"):
                try:
                    values[f.name] = int(raw.strip())
                except ValueError:
                    raise ConfigError(f"{var}={raw!r}: expected a whole number") from None
            else:
                values[f.name] = raw
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag and variable of the first wrong value."""
        for f in attrs.fields(type(self)):
            allowed = f.metadata.get("choices")
            if allowed and getattr(self, f.name) not in allowed:
                raise ConfigError(f"{_name(f.name)} must be one of {', '.join(allowed)}, not {getattr(self, f.name)!r}")
        # client-go's rules: a leader must give up before a standby may take over, and must be able
        # to retry a renewal (with jitter) within its deadline.
        if self.leader_election_lease_duration <= self.leader_election_renew_deadline:
            raise ConfigError(f"{_name('leader_election_lease_duration')} must be greater than "
                              f"{_name('leader_election_renew_deadline')}")
        if self.leader_election_retry_period < 1 or \
                self.leader_election_renew_deadline <= 1.2 * self.leader_election_retry_period:
            raise ConfigError(f"{_name('leader_election_renew_deadline')} must be greater than 1.2 x "
                              f"{_name('leader_election_retry_period')} (and the retry period at least 1 s)")
        if self.object_count_interval < 1:
            raise ConfigError(f"{_name('object_count_interval')} must be at least 1 second")
        if self.max_concurrent_reconciles < 1:
            raise ConfigError(f"{_name('max_concurrent_reconciles')} must be at least 1")
        if self.cloud == "gcp" and not self.bucket_url.startswith("gs://"):
            raise ConfigError(f"the gcp cloud needs {_name('bucket_url')} gs://BUCKET")
