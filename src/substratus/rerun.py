"""``substratus rerun KIND/NAME``: run a complete Model's or Dataset's Job again (SPEC §3).

A Model or Dataset whose ``{status.url}/completed.json`` exists is complete and never runs again,
whatever its spec says — the bucket is the source of truth. To produce new artifacts after a
spec change, this moves the marker aside to ``{status.url}/history/completed-<UTC time>.json``
(nothing is deleted: the artifacts stay where they are and are overwritten only by the new Job),
and sets the annotation ``substratus.ai/rerun`` on the object, which wakes the controller and
makes the next workload Job a new one.

The bucket is reached like the operator reaches it, chosen by the scheme of ``status.url``:
``gs://`` through Google's default credentials, ``file://`` on this machine (the local cloud of
``substratus dev run``).
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import TextIO

import attrs

from substratus import naming
from substratus.cli import CliError, ExitCode
from substratus.cloud.base import Cloud
from substratus.controllers.resources import BY_KIND
from substratus.explain import _current_namespace, parse_target
from substratus.runtime.client import ApiError, Client

RERUNNABLE = ("Model", "Dataset")


class RerunError(Exception):
    """The object cannot be rerun; the message says why and what to do."""


@attrs.frozen
class Rerun:
    """What ``rerun`` did: the marker moved (None if there was none) and the annotation value."""

    marker: str
    moved_to: str | None
    stamp: str


def cloud_for(url: str) -> Cloud:
    """A cloud able to reach ``url`` (a ``status.url``), by its scheme."""
    bucket = url.rstrip("/").rsplit("/", 1)[0]
    if url.startswith("gs://"):
        from substratus.cloud.gcp import GcpCloud

        return GcpCloud(bucket)
    if url.startswith("file://"):
        from substratus.cloud.local import LocalCloud

        # Only storage is used here: no URLs are signed.
        return LocalCloud(bucket, signing_key="unused", upload_base_url="http://unused")
    raise RerunError(f"cannot reach {url!r}: only gs:// and file:// storage URLs are supported")


async def rerun(client: Client, kind: str, name: str, namespace: str, *, cloud: Cloud | None = None,
                now: dt.datetime | None = None) -> Rerun:
    """Move ``completed.json`` into ``history/`` and annotate the object; raises RerunError."""
    if kind not in RERUNNABLE:
        raise RerunError(f"{kind} has no Job to run again; only Model and Dataset do")
    res = BY_KIND[kind]
    obj = await client.get_or_none(res, name, namespace)
    if obj is None:
        raise RerunError(f"{kind} {namespace}/{name} not found")
    url = (obj.get("status") or {}).get("url")
    if not url:
        raise RerunError(f"{kind} {namespace}/{name} has no status.url yet: is the operator running?")
    cloud = cloud or cloud_for(url)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    marker = naming.completed_marker_url(url)
    moved_to: str | None = naming.history_url(url, f"completed-{stamp}.json")
    assert moved_to is not None
    try:
        await cloud.move(marker, moved_to)
    except FileNotFoundError:
        moved_to = None  # not complete (yet): the annotation alone starts a new Job
    finally:
        await cloud.close()
    await client.patch(res, name, {"metadata": {"annotations": {naming.RERUN_ANNOTATION: stamp}}}, namespace)
    return Rerun(marker=marker, moved_to=moved_to, stamp=stamp)


async def main(target: str, namespace: str | None, kubeconfig: str | None, out: TextIO | None = None, *,
               context: str | None = None) -> int:
    """``substratus rerun``: 0 done. Failures raise :class:`substratus.cli.CliError` with the
    shared exit codes (2 bad target or a kind without a Job, 3 no cluster, 4 CRDs missing,
    1 anything else: object not found, no ``status.url`` yet, the bucket refused)."""
    from substratus.plugins.upload import check_crd, connect

    out = out or sys.stdout
    try:
        kind, name = parse_target(target)
    except ValueError as exc:
        raise CliError(ExitCode.USAGE, str(exc)) from None
    if kind not in RERUNNABLE:
        raise CliError(ExitCode.USAGE, f"{kind} has no Job to run again; only Model and Dataset do")
    client = await connect(kubeconfig, context)
    try:
        await check_crd(client, BY_KIND[kind])
        ns = namespace or _current_namespace(kubeconfig, context)
        done = await rerun(client, kind, name, ns)
    except RerunError as exc:
        raise CliError(ExitCode.ERROR, str(exc)) from None
    except ApiError as exc:
        raise CliError(ExitCode.NO_CLUSTER if exc.status in (401, 403) else ExitCode.ERROR,
                       f"talking to the API server at {client.host}: {exc}") from None
    except OSError as exc:  # the bucket (gcsfs, a local path) or the connection to the API server
        raise CliError(ExitCode.ERROR, f"{type(exc).__name__}: {exc}") from None
    finally:
        await client.close()
    job = naming.child_name(name, kind)
    if done.moved_to:
        print(f"moved {done.marker} to {done.moved_to} (nothing deleted)", file=out)
    else:
        print(f"no {done.marker}: {kind.lower()}/{name} was not complete; nothing moved", file=out)
    print(f"annotated {kind.lower()}/{name} {naming.RERUN_ANNOTATION}={done.stamp}: "
          f"the controller runs Job {job} again", file=out)
    return ExitCode.OK
