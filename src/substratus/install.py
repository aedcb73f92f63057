"""Install the CRDs into a cluster through the API and wait until they are served.

Used by ``make run`` / ``substratus dev`` and the tests. Going through the API rather than
``kubectl apply`` sidesteps kubectl >= 1.25 refusing CEL rules an old server does not know.
"""

from __future__ import annotations

import asyncio
import logging
import time

from substratus.api.crd import generate_crds
from substratus.runtime.client import Client
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
