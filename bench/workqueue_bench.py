"""Work queue throughput: add + get + done cycles per second.

One cycle is one distinct item through ``add`` (by the producer), ``get`` and ``done`` (by a
worker task). The items are :class:`~substratus.runtime.reconcile.Request`s, what controllers
queue (created before the clock starts, as an informer's handler would have made them), so
hashing and comparing them is part of the cost. The producer yields to the loop after every
``workers`` adds, so workers mostly find the queue empty and are woken by ``add`` -- the path an
informer-fed controller takes -- rather than draining a pre-filled queue. Worker counts: 1, 8 and
the operator's default (``--max-concurrent-reconciles``). Each run is timed twice: by the wall
clock and by the process's CPU time. On a shared machine the CPU-time rate is the one to read:
it is what the queue costs one core, whatever else that core was doing meanwhile.

    python -m bench.workqueue_bench [--cycles N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from substratus.config import OperatorConfig
from substratus.runtime.reconcile import Request
from substratus.runtime.workqueue import Queue, ShutDown

DEFAULT_WORKERS: int = OperatorConfig().max_concurrent_reconciles
"""Workers per controller when ``substratus run`` is given no ``--max-concurrent-reconciles``."""
WORKER_COUNTS: tuple[int, ...] = tuple(sorted({1, 8, DEFAULT_WORKERS}))


def loops() -> dict[str, Callable[[Coroutine[Any, Any, Any]], Any]]:
    """The event loops to measure on: asyncio's own, and uvloop (the operator's) when installed."""
    out: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {"asyncio": asyncio.run}
    try:
        import uvloop
    except ImportError:
        return out
    out["uvloop"] = uvloop.run
    return out


async def _run(cycles: int, workers: int, metrics: bool) -> tuple[float, float]:
    q: Queue[Request] = Queue("bench-workqueue" if metrics else "", controller="bench" if metrics else "")
    items = [Request("bench", f"item-{i}") for i in range(cycles)]
    processed = 0

    async def worker() -> None:
        nonlocal processed
        while True:
            try:
                item = await q.get()
            except ShutDown:
                return
            processed += 1
            q.done(item)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await asyncio.sleep(0)  # let the workers block in get()
    start = time.perf_counter()
    cpu_start = time.process_time()
    for i, item in enumerate(items, 1):
        q.add(item)
        if i % workers == 0:
            await asyncio.sleep(0)
    q.shutdown()  # workers still take what is queued, then get ShutDown
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if processed != cycles:
        raise AssertionError(f"processed {processed} of {cycles} items")
    return elapsed, cpu


def run(cycles: int, workers: int, *, metrics: bool = True, loop: str = "asyncio") -> dict[str, Any]:
    """Time ``cycles`` distinct items through a queue with ``workers`` workers (own event loop)."""
    seconds, cpu = loops()[loop](_run(cycles, workers, metrics))
    return {
        "workers": workers,
        "cycles": cycles,
        "metrics": metrics,
        "loop": loop,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "cycles_per_second": cycles / seconds,
        "cycles_per_cpu_second": cycles / cpu if cpu > 0 else None,
    }


def run_rounds(cycles: int, rounds: int = 3, log: Any = None) -> list[dict[str, Any]]:
    """Every (loop, workers, metrics) triple ``rounds`` times, interleaved; medians per triple.

    Interleaving spreads whatever else the machine is doing over all configurations.
    """
    configs = [(lp, w, m) for lp in loops() for w in WORKER_COUNTS for m in (True, False)]
    samples: dict[tuple[str, int, bool], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(rounds):
        for lp, workers, metrics in configs:
            samples[(lp, workers, metrics)].append(run(cycles, workers, metrics=metrics, loop=lp))
    out = []
    for (lp, workers, metrics), rs in samples.items():
        rates = sorted(r["cycles_per_second"] for r in rs)
        cpu_rates = sorted(r["cycles_per_cpu_second"] for r in rs if r["cycles_per_cpu_second"])
        med = statistics.median(rates)
        cpu_med = statistics.median(cpu_rates) if cpu_rates else None
        out.append({"loop": lp, "workers": workers, "cycles": cycles, "metrics": metrics, "rounds": len(rs),
                    "seconds": cycles / med, "cycles_per_second": med, "min_cycles_per_second": rates[0],
                    "max_cycles_per_second": rates[-1], "cycles_per_cpu_second": cpu_med,
                    "min_cycles_per_cpu_second": cpu_rates[0] if cpu_rates else None,
                    "max_cycles_per_cpu_second": cpu_rates[-1] if cpu_rates else None})
        if log:
            log(f"  loop={lp} workers={workers} metrics={'on' if metrics else 'off'}: {med:,.0f} cycles/s wall, "
                f"{cpu_med or 0:,.0f} per CPU second (median of {len(rs)})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    run_rounds(args.cycles, args.rounds, log=print)


if __name__ == "__main__":
    main()
