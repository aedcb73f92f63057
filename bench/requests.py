"""CPU per request of the operator's REST client against a real API server.

    python -m bench.requests --kubeconfig PATH [--n 2000] [--concurrency 16] [--rounds 3]

Creates ``--n`` ConfigMaps (POST), merge-patches each (PATCH), patches each again with a
Dataset-status-sized body, then GETs each, in a fresh namespace, with ``--concurrency`` requests
in flight, and prints the process CPU seconds (user + system, ``time.process_time``) per request
for each verb: what ``Client`` spends per request (body encoding, headers, auth, URL, aiohttp,
TLS, response decoding), the API server's own CPU excluded. Used to measure issue 18's request-
path changes before/after on the same machine (docs/operations.md#performance).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid

from substratus.runtime import eventloop
from substratus.runtime.client import Client
from substratus.runtime.resource import CONFIGMAPS, NAMESPACES


def _status_body(i: int) -> dict:
    """A merge patch the size and shape of a Dataset status write (two conditions)."""
    now = "2026-11-30T00:00:00Z"
    return {"metadata": {"annotations": {"bench/step": str(i)}},
            "data": {"conditions": json.dumps([
                {"type": t, "status": "True", "reason": "JobRunning", "message": "the loader Job is running",
                 "lastTransitionTime": now, "observedGeneration": 1} for t in ("Loaded", "Ready")])}}


async def _timed(label: str, n: int, concurrency: int, op) -> tuple[str, float]:  # type: ignore[no-untyped-def]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await op(i)

    cpu0 = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return label, (time.process_time() - cpu0) / n * 1e6


async def _round(client: Client, n: int, concurrency: int) -> dict[str, float]:
    ns = f"bench-req-{uuid.uuid4().hex[:8]}"
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    try:
        results = dict([
            await _timed("create", n, concurrency, lambda i: client.create(
                CONFIGMAPS, {"metadata": {"name": f"cm-{i}", "namespace": ns, "labels": {"app": "bench"}},
                             "data": {"key": "value" * 20}})),
            await _timed("patch", n, concurrency, lambda i: client.patch(
                CONFIGMAPS, f"cm-{i}", {"metadata": {"labels": {"step": "1"}}}, ns)),
            await _timed("patch status-sized", n, concurrency, lambda i: client.patch(
                CONFIGMAPS, f"cm-{i}", _status_body(i), ns)),
            await _timed("get", n, concurrency, lambda i: client.get(CONFIGMAPS, f"cm-{i}", ns)),
        ])
    finally:
        await client.delete(NAMESPACES, ns)
    return results


async def _main(args: argparse.Namespace) -> None:
    client = await Client.from_kubeconfig(args.kubeconfig)
    try:
        await _round(client, 50, args.concurrency)  # warm-up: connections, TLS sessions, imports
        for r in range(args.rounds):
            res = await _round(client, args.n, args.concurrency)
            print(json.dumps({"round": r, "pid": os.getpid(), "cpu_us_per_request": {k: round(v, 1) for k, v in res.items()}}),
                  flush=True)
    finally:
        await client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    eventloop.run(_main(p.parse_args()))  # the operator's loop (uvloop when installed)


if __name__ == "__main__":
    main()
