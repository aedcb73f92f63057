"""Rate limiters: client-go's delay sequences, with a fake clock for the token bucket."""

from __future__ import annotations

import math

import pytest

from substratus.runtime.ratelimiter import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    ItemFastSlowRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)
from substratus.runtime.workqueue import FakeClock


def test_exponential_doubles_from_base_and_caps_at_max() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [limiter.when("a") for _ in range(20)]
    # 5 ms * 2**17 = 655.36 s is the last uncapped step; 2**18 would be 1310.72 s.
    assert delays[:18] == [0.005 * 2**i for i in range(18)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[18:] == [1000.0, 1000.0]
    assert limiter.num_requeues("a") == 20


def test_exponential_never_overflows() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    for _ in range(1100):  # 2**1100 does not fit in a float
        delay = limiter.when("a")
    assert delay == 1000.0
    huge_base = ItemExponentialFailureRateLimiter(1e300, math.inf)
    assert huge_base.when("x") == 1e300
    delays = [huge_base.when("x") for _ in range(40)]  # float max is ~1.8e308 = 1e300 * 2**27.4
    assert delays[26] == 1e300 * 2**27
    assert delays[27:] == [math.inf] * 13  # overflow maps to the cap, not an exception


def test_exponential_is_per_item_and_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter(1.0, 60.0)
    assert [limiter.when("a") for _ in range(3)] == [1.0, 2.0, 4.0]
    assert limiter.when("b") == 1.0
    assert limiter.num_requeues("a") == 3
    assert limiter.num_requeues("b") == 1
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 1.0
    assert limiter.num_requeues("b") == 1
    limiter.forget("never-seen")  # harmless


def test_fast_slow() -> None:
    limiter = ItemFastSlowRateLimiter(0.01, 5.0, 3)
    assert [limiter.when("a") for _ in range(5)] == [0.01, 0.01, 0.01, 5.0, 5.0]
    assert limiter.when("b") == 0.01
    assert limiter.num_requeues("a") == 5
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 0.01


def test_bucket_burst_then_one_over_qps_spacing() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(10.0, 3, now=clock.now)
    assert [limiter.when(i) for i in range(3)] == [0.0, 0.0, 0.0]
    # Reservations queue up behind each other: 1/qps apart.
    assert [limiter.when(i) for i in range(3, 6)] == pytest.approx([0.1, 0.2, 0.3])
    clock.step(0.3)  # refills exactly the three tokens already promised
    assert limiter.when("x") == pytest.approx(0.1)
    clock.step(10.0)  # refill is capped at burst
    assert [limiter.when(i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.when("y") == pytest.approx(0.1)
    assert limiter.num_requeues("y") == 0
    limiter.forget("y")  # shared bucket: nothing to forget
    assert limiter.when("z") == pytest.approx(0.2)


def test_bucket_partial_refill() -> None:
    clock = FakeClock(100.0)
    limiter = BucketRateLimiter(2.0, 1, now=clock.now)
    assert limiter.when("a") == 0.0
    clock.step(0.25)  # half a token back
    assert limiter.when("b") == pytest.approx(0.25)


def test_bucket_unlimited_and_invalid() -> None:
    unlimited = BucketRateLimiter(math.inf, 0)
    assert all(unlimited.when(i) == 0.0 for i in range(1000))
    with pytest.raises(ValueError):
        BucketRateLimiter(0.0, 10)
    with pytest.raises(ValueError):
        BucketRateLimiter(10.0, 0)


def test_max_of_asks_every_limiter_and_returns_the_longest() -> None:
    clock = FakeClock()
    exp = ItemExponentialFailureRateLimiter(0.001, 10.0)
    fast_slow = ItemFastSlowRateLimiter(0.002, 3.0, 2)
    bucket = BucketRateLimiter(1.0, 2, now=clock.now)
    limiter = MaxOfRateLimiter(exp, fast_slow, bucket)
    assert isinstance(limiter, RateLimiter)
    assert limiter.when("a") == 0.002  # fast-slow beats exponential's 0.001; bucket has tokens
    assert limiter.when("a") == 0.002  # exponential 0.002 ties
    assert limiter.when("a") == pytest.approx(3.0)  # slow now; bucket wants 1 s
    assert limiter.when("b") == pytest.approx(2.0)  # bucket is the slowest for a new item
    # Every limiter saw every request.
    assert exp.num_requeues("a") == 3
    assert fast_slow.num_requeues("a") == 3
    assert limiter.num_requeues("a") == 3
    limiter.forget("a")
    assert exp.num_requeues("a") == 0
    assert fast_slow.num_requeues("a") == 0
    assert limiter.num_requeues("a") == 0


def test_default_controller_rate_limiter() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(now=clock.now)
    # 100 distinct items ride the burst at the exponential base delay...
    assert all(limiter.when(i) == 0.005 for i in range(100))
    # ...then the 10 qps bucket dominates.
    assert limiter.when(100) == pytest.approx(0.1)
    assert limiter.when(101) == pytest.approx(0.2)
    clock.step(3600.0)
    # One item failing repeatedly: exponential growth up to the 1000 s cap.
    delays = [limiter.when("x") for _ in range(25)]
    assert delays[:3] == [0.005, 0.01, 0.02]
    assert delays[-1] == 1000.0
    assert limiter.num_requeues("x") == 25
    limiter.forget("x")
    assert limiter.num_requeues("x") == 0
