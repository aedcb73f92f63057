"""Install the CRDs into a cluster through the API and wait until they are served.

Used by ``make run`` / ``substratus dev`` and the tests. Going through the API rather than
``kubectl apply`` sidesteps kubectl >= 1.25 refusing CEL rules an old server does not know; for
users, :func:`crd_apply_command` is the ``kubectl`` command that works on their server.
"""

from __future__ import annotations

import asyncio
import logging
import time

from substratus.api.crd import crd_apply_command, generate_crds
from substratus.runtime.client import ApiError, Client
from substratus.runtime.resource import CRDS

log = logging.getLogger(__name__)


def crd_established(crd: dict) -> bool:
    """True once the API server serves the CRD; ``status.conditions`` is null just after create."""
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


async def install_crds(client: Client, timeout: float = 60.0) -> list[str]:
    """Apply every generated CRD and wait until each is Established; returns their names."""
    names = []
    for crd in generate_crds().values():
        name = crd["metadata"]["name"]
        # Create or replace rather than server-side apply: SSA refuses fields an older server's
        # CRD schema does not declare (x-kubernetes-validations before 1.25), create/update drop them.
        current = await client.get_or_none(CRDS, name)
        if current is None:
            await client.create(CRDS, crd)
        else:
            await client.replace(CRDS, {**crd, "metadata": {**crd["metadata"],
                                                             "resourceVersion": current["metadata"]["resourceVersion"]}})
        names.append(name)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in sorted(pending):
            if crd_established(await client.get(CRDS, name)):
                pending.discard(name)
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not established after {timeout}s: {', '.join(sorted(pending))}")
            await asyncio.sleep(0.2)
    log.info("CRDs installed", extra={"crds": names})
    return names


async def crd_enforces_cel(client: Client, crd_name: str = "models.substratus.ai") -> bool:
    """Whether the API server enforces the CEL rules (``x-kubernetes-validations``) of an installed CRD.

    A server without CEL (1.20 to 1.22; 1.23 and 1.24 with the feature gate off, its default) drops the
    field when the CRD is written, so it is kept exactly where it is enforced: the stored CRD is the
    capability probe, no version table needed. Where it is False the controller alone enforces the
    same rules (``InvalidSpec``, SPEC §2); raises if the CRD is not installed.
    """
    crd = await client.get(CRDS, crd_name)
    return any("x-kubernetes-validations" in (v.get("schema") or {}).get("openAPIV3Schema", {})
               for v in crd["spec"]["versions"])


async def server_minor(client: Client) -> int | None:
    """The API server's minor version from ``/version`` (``"20"``, ``"28+"`` on some clouds); None
    if it cannot be read."""
    try:
        info = await client.request("GET", "/version")
    except (ApiError, OSError):
        return None
    digits = "".join(ch for ch in str((info or {}).get("minor", "")) if ch.isdigit())
    return int(digits) if digits else None


async def crd_install_hint(client: Client) -> str:
    """:func:`crd_apply_command` for the server ``client`` talks to."""
    return crd_apply_command(await server_minor(client))
