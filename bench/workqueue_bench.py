"""Work queue throughput: add + get + done cycles per second.

The producer yields to the loop after every ``workers`` adds, so workers mostly find the queue
empty and are woken by ``add`` -- the path an informer-fed controller takes -- rather than
draining a pre-filled queue.

    python -m bench.workqueue_bench [--cycles N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from substratus.runtime.workqueue import Queue, ShutDown


async def _run(cycles: int, workers: int, metrics: bool) -> float:
    q: Queue[int] = Queue("bench-workqueue" if metrics else "", controller="bench" if metrics else "")
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
    for i in range(cycles):
        q.add(i)
        if (i + 1) % workers == 0:
            await asyncio.sleep(0)
    q.shutdown()  # workers still take what is queued, then get ShutDown
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    if processed != cycles:
        raise AssertionError(f"processed {processed} of {cycles} items")
    return elapsed


def run(cycles: int, workers: int, *, metrics: bool = True) -> dict[str, float | int | bool]:
    """Time ``cycles`` distinct items through a queue with ``workers`` workers (own event loop)."""
    seconds = asyncio.run(_run(cycles, workers, metrics))
    return {
        "workers": workers,
        "cycles": cycles,
        "metrics": metrics,
        "seconds": seconds,
        "cycles_per_second": cycles / seconds,
    }


def run_rounds(cycles: int, rounds: int = 3, log: Any = None) -> list[dict[str, Any]]:
    """Every (workers, metrics) pair ``rounds`` times, interleaved; the median round of each pair.

    Interleaving spreads whatever else the machine is doing over all four configurations.
    """
    configs = [(w, m) for w in (1, 8) for m in (True, False)]
    samples: dict[tuple[int, bool], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(rounds):
        for workers, metrics in configs:
            samples[(workers, metrics)].append(run(cycles, workers, metrics=metrics))
    out = []
    for (workers, metrics), rs in samples.items():
        rates = sorted(r["cycles_per_second"] for r in rs)
        med = statistics.median(rates)
        out.append({"workers": workers, "cycles": cycles, "metrics": metrics, "rounds": len(rs),
                    "seconds": cycles / med, "cycles_per_second": med, "min_cycles_per_second": rates[0],
                    "max_cycles_per_second": rates[-1]})
        if log:
            log(f"  workers={workers} metrics={'on' if metrics else 'off'}: {med:,.0f} cycles/s "
                f"(median of {len(rs)}, {rates[0]:,.0f}-{rates[-1]:,.0f})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{'workers':>7}  {'metrics':>7}  {'cycles':>8}  {'seconds':>8}  {'cycles/s':>10}")
    for workers in (1, 8):
        for metrics in (True, False):
            r = run(args.cycles, workers, metrics=metrics)
            print(
                f"{r['workers']:>7}  {'on' if r['metrics'] else 'off':>7}  {r['cycles']:>8}  "
                f"{r['seconds']:>8.3f}  {r['cycles_per_second']:>10,.0f}"
            )


if __name__ == "__main__":
    main()
