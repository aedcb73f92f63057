"""Requeue rate limiters with client-go's ``util/workqueue`` semantics.

A limiter answers "how long should this item wait before it is retried?". Keeping the exact
client-go behaviour (and controller-runtime's default combination) means retry timing, and the
dashboards built on it, look the same as for a Go operator.

All limiters are plain, synchronous objects: the event loop is single-threaded, so no locks are
needed, but they must only be used from the loop's thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Protocol, runtime_checkable

__all__ = [
    "BucketRateLimiter",
    "ItemExponentialFailureRateLimiter",
    "ItemFastSlowRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "default_controller_rate_limiter",
]


@runtime_checkable
class RateLimiter(Protocol):
    """Decides per item how long to wait before the item may be processed again."""

    def when(self, item: Hashable) -> float:
        """Record one more requeue of ``item`` and return how many seconds it should wait."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking ``item`` (it succeeded, or we gave up): its next delay starts over."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """How many times ``item`` has been requeued since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter:
    """Per-item ``base_delay * 2**failures``, capped at ``max_delay``.

    Every :meth:`when` counts as a failure. The cap is applied before the value can overflow, so
    an item that keeps failing for ever settles at ``max_delay`` instead of raising.
    """

    def __init__(self, base_delay: float, max_delay: float) -> None:
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must be >= 0")
        self._base = float(base_delay)
        self._max = float(max_delay)
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        try:
            backoff = math.ldexp(self._base, exp)  # base * 2**exp without building a huge int
        except OverflowError:
            return self._max
        return self._max if backoff > self._max else backoff

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class ItemFastSlowRateLimiter:
    """``fast_delay`` for the first ``max_fast_attempts`` requeues of an item, ``slow_delay`` after.

    Useful for things that usually resolve quickly but may take long (e.g. waiting for a peer).
    """

    def __init__(self, fast_delay: float, slow_delay: float, max_fast_attempts: int) -> None:
        if fast_delay < 0 or slow_delay < 0 or max_fast_attempts < 0:
            raise ValueError("delays and max_fast_attempts must be >= 0")
        self._fast = float(fast_delay)
        self._slow = float(slow_delay)
        self._max_fast = max_fast_attempts
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        failures = self._failures.get(item, 0) + 1
        self._failures[item] = failures
        return self._fast if failures <= self._max_fast else self._slow

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """Overall (not per-item) token bucket: ``qps`` refill rate, ``burst`` capacity.

    Reserve-style like ``golang.org/x/time/rate.Limiter.Reserve().Delay()``: every :meth:`when`
    takes a token *now*, letting the balance go negative, and returns how long until that token
    exists. The bucket starts full. ``now`` is a monotonic clock in seconds, injectable for tests.
    """

    def __init__(self, qps: float, burst: int, *, now: Callable[[], float] = time.monotonic) -> None:
        if not qps > 0:
            raise ValueError("qps must be > 0 (math.inf for unlimited)")
        if burst < 1 and not math.isinf(qps):
            raise ValueError("burst must be >= 1, or every reservation would wait for ever")
        self._qps = float(qps)
        self._burst = float(burst)
        self._now = now
        self._tokens = float(burst)
        self._last: float | None = None

    def when(self, item: Hashable) -> float:
        if math.isinf(self._qps):
            return 0.0
        now = self._now()
        tokens = self._tokens
        if self._last is not None and now > self._last:
            tokens = min(self._burst, tokens + (now - self._last) * self._qps)
        self._last = now
        tokens -= 1.0
        self._tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self._qps

    def forget(self, item: Hashable) -> None:
        """Nothing per item to forget: the bucket is shared."""

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """Asks every limiter (so each records the requeue) and returns the longest delay.

    With a token bucket inside, the burst can appear exceeded when some items were separately
    delayed longer -- the same caveat as client-go.
    """

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, item: Hashable) -> float:
        # No generator/max(): every limiter must be asked, and this sits on the retry path.
        longest = 0.0
        for limiter in self._limiters:
            delay = limiter.when(item)
            if delay > longest:
                longest = delay
        return longest

    def forget(self, item: Hashable) -> None:
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter(*, now: Callable[[], float] = time.monotonic) -> MaxOfRateLimiter:
    """controller-runtime's default: per-item exponential 5 ms -> 1000 s, overall 10 qps / burst 100.

    The bucket only bounds the overall retry rate; the exponential part is what backs off a
    single failing object.
    """
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(10.0, 100, now=now),
    )
