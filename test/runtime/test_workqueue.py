"""Work queue semantics, checked against client-go's behaviour. No real sleeps except one smoke test."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from substratus.runtime.metrics import REGISTRY
from substratus.runtime.ratelimiter import ItemExponentialFailureRateLimiter
from substratus.runtime.workqueue import (
    DelayingQueue,
    FakeClock,
    Queue,
    RateLimitingQueue,
    ShutDown,
)

T = TypeVar("T")


async def settle(rounds: int = 10) -> None:
    """Let every ready task run (several loop iterations, no real time)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def within(awaitable: Awaitable[T], seconds: float = 10.0) -> T:
    """Guard an await that would hang if the queue lost a wakeup (a hang guard, not a speed check)."""
    return await asyncio.wait_for(awaitable, seconds)


def sample(metric: str, name: str, controller: str = "") -> float | None:
    return REGISTRY.get_sample_value(metric, {"name": name, "controller": controller})


# --------------------------------------------------------------------------- Queue


async def test_fifo_order() -> None:
    q: Queue[int] = Queue("")
    for i in range(100):
        q.add(i)
    assert q.len() == 100
    got = []
    for _ in range(100):
        item = await within(q.get())
        got.append(item)
        q.done(item)
    assert got == list(range(100))
    assert q.len() == 0


async def test_waiting_items_are_deduplicated() -> None:
    q: Queue[str] = Queue("")
    for item in ["a", "b", "a", "c", "b", "a"]:
        q.add(item)
    assert q.len() == 3
    assert [await within(q.get()) for _ in range(3)] == ["a", "b", "c"]


async def test_re_add_while_processing_runs_exactly_once_more_after_done() -> None:
    q: Queue[str] = Queue("")
    q.add("a")
    assert await within(q.get()) == "a"
    for _ in range(3):
        q.add("a")  # dirty, but not queued while it is being processed
    assert q.len() == 0
    second = asyncio.create_task(q.get())
    await settle()
    assert not second.done()  # never handed to a second worker while in flight
    q.done("a")
    assert await within(second) == "a"
    q.done("a")
    assert q.len() == 0
    third = asyncio.create_task(q.get())
    await settle()
    assert not third.done()  # exactly once more, not once per add
    third.cancel()


async def test_done_for_an_item_not_handed_out_is_ignored() -> None:
    q: Queue[str] = Queue("")
    q.add("a")
    q.done("a")  # client-go would queue a duplicate here
    assert q.len() == 1
    assert await within(q.get()) == "a"
    q.done("a")
    q.done("a")
    assert q.len() == 0


async def test_item_never_processed_by_two_workers_at_once() -> None:
    rng = random.Random(20240601)
    keys = 12
    q: Queue[int] = Queue("")
    tick = itertools.count()
    last_add: dict[int, int] = {}
    last_get: dict[int, int] = {}
    in_flight: set[int] = set()
    violations: list[int] = []
    max_in_flight = 0
    processed = 0

    def add(key: int) -> None:
        if not q.shutting_down:
            last_add[key] = next(tick)
            q.add(key)

    async def worker() -> None:
        nonlocal max_in_flight, processed
        while True:
            try:
                item = await within(q.get())
            except ShutDown:
                return
            if item in in_flight:
                violations.append(item)
            in_flight.add(item)
            max_in_flight = max(max_in_flight, len(in_flight))
            last_get[item] = next(tick)
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
            if rng.random() < 0.3:
                add(item if rng.random() < 0.5 else rng.randrange(keys))  # often re-adds itself
            in_flight.discard(item)
            processed += 1
            q.done(item)

    async def producer() -> None:
        for _ in range(2000):
            add(rng.randrange(keys))
            if rng.random() < 0.5:
                await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(16)]
    await within(asyncio.gather(*(producer() for _ in range(4))), 60)
    await within(q.shutdown_with_drain(), 60)
    await within(asyncio.gather(*workers), 60)  # they empty the queue, then get ShutDown

    assert violations == []
    assert max_in_flight > 1  # the test really ran workers concurrently
    assert processed < 8000  # adds coalesced
    assert q.len() == 0
    # No add was lost: every key was processed after the last time it was added.
    assert set(last_get) == set(last_add)
    assert all(last_get[key] > last_add[key] for key in last_add)


async def test_every_waiter_gets_one_item() -> None:
    q: Queue[int] = Queue("")
    getters = [asyncio.create_task(q.get()) for _ in range(10)]
    await settle()
    for i in range(10):
        q.add(i)
    assert sorted(await within(asyncio.gather(*getters))) == list(range(10))


async def test_items_added_at_once_start_on_every_idle_worker() -> None:
    """Wakeups are chained (one per worker that is needed), yet no item waits for a busy worker
    while another worker idles: a reconcile that awaits I/O holds its worker, and the rest of
    a burst must still run concurrently."""
    q: Queue[int] = Queue("")
    gate = asyncio.Event()
    running: set[int] = set()

    async def worker() -> None:
        item = await q.get()
        running.add(item)
        await gate.wait()  # a reconcile in flight
        q.done(item)

    workers = [asyncio.create_task(worker()) for _ in range(5)]
    await settle()
    for i in range(5):
        q.add(i)
    await settle(20)
    assert running == set(range(5))
    gate.set()
    await within(asyncio.gather(*workers))


async def test_cancelled_waiter_passes_its_wakeup_on() -> None:
    q: Queue[str] = Queue("")
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await settle()
    q.add("x")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await within(second) == "x"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cancelled_waiter_does_not_swallow_items() -> None:
    q: Queue[str] = Queue("")
    waiter = asyncio.create_task(q.get())
    await settle()
    waiter.cancel()
    await settle()
    q.add("x")
    assert q.len() == 1
    assert await within(q.get()) == "x"


async def test_shutdown_wakes_all_waiters() -> None:
    q: Queue[int] = Queue("")
    getters = [asyncio.create_task(q.get()) for _ in range(20)]
    await settle()
    assert not any(g.done() for g in getters)
    q.shutdown()
    results = await within(asyncio.gather(*getters, return_exceptions=True))
    assert all(isinstance(r, ShutDown) for r in results)
    assert q.shutting_down
    with pytest.raises(ShutDown):
        await within(q.get())


async def test_after_shutdown_adds_are_ignored_but_queued_items_are_still_handed_out() -> None:
    # client-go's Get returns shutdown=true only once the queue is empty.
    q: Queue[int] = Queue("")
    q.add(1)
    q.add(2)
    q.shutdown()
    q.add(3)
    assert q.len() == 2
    assert await within(q.get()) == 1
    assert await within(q.get()) == 2
    with pytest.raises(ShutDown):
        await within(q.get())


async def test_shutdown_with_drain_waits_for_in_flight_items() -> None:
    q: Queue[str] = Queue("")
    q.add("foo")
    q.add("bar")
    foo, bar = await within(q.get()), await within(q.get())
    drain = asyncio.create_task(q.shutdown_with_drain())
    await settle()
    assert not drain.done()
    assert q.shutting_down
    with pytest.raises(ShutDown):  # nothing queued: workers are told to exit
        await within(q.get())
    q.add("late")
    assert q.len() == 0
    q.done(foo)
    await settle()
    assert not drain.done()
    q.done(bar)
    await within(drain)


async def test_shutdown_with_drain_and_a_dirty_item() -> None:
    # client-go's TestQueueDrainageUsingShutDownWithDrainWithDirtyItem.
    q: Queue[str] = Queue("")
    q.add("foo")
    gotten = await within(q.get())
    q.add("foo")
    drain = asyncio.create_task(q.shutdown_with_drain())
    await settle()
    assert not drain.done()
    q.done(gotten)  # re-queues foo; nothing is processing any more
    await within(drain)
    again = await within(q.get())  # the dirty item is still handed out
    assert again == "foo"
    q.done(again)
    with pytest.raises(ShutDown):
        await within(q.get())


async def test_shutdown_forces_a_pending_drain_to_return() -> None:
    q: Queue[str] = Queue("")
    q.add("foo")
    await within(q.get())
    drain = asyncio.create_task(q.shutdown_with_drain())
    await settle()
    assert not drain.done()
    q.shutdown()
    await within(drain)


async def test_shutdown_with_drain_returns_at_once_when_idle() -> None:
    q: Queue[str] = Queue("")
    await within(q.shutdown_with_drain())
    assert q.shutting_down


def test_queue_can_be_created_outside_a_running_loop() -> None:
    q: Queue[int] = Queue("test-outside-loop")
    q.add(1)
    assert q.len() == 1
    q.shutdown()


def test_invalid_update_period() -> None:
    with pytest.raises(ValueError):
        Queue("", unfinished_work_update_period=0)


# --------------------------------------------------------------------------- DelayingQueue


async def test_add_after_orders_by_deadline() -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = DelayingQueue("", clock=clock)
    q.add_after("a", 3.0)
    q.add_after("b", 1.0)
    q.add_after("c", 2.0)
    assert q.len() == 0
    clock.step(0.5)
    assert q.len() == 0
    clock.step(0.5)
    assert q.len() == 1
    assert await within(q.get()) == "b"
    clock.step(1.0)
    assert await within(q.get()) == "c"
    clock.step(1.0)
    assert await within(q.get()) == "a"
    assert clock.pending() == 0  # nothing waits, so no timer is armed (unnamed queue: no metrics timer)


async def test_add_after_all_due_at_once_come_out_in_deadline_order() -> None:
    clock = FakeClock()
    q: DelayingQueue[int] = DelayingQueue("", clock=clock)
    deadlines = [5.0, 1.0, 4.0, 2.0, 3.0]
    for i, delay in enumerate(deadlines):
        q.add_after(i, delay)
    clock.step(10.0)
    assert [await within(q.get()) for _ in deadlines] == [1, 3, 4, 2, 0]


async def test_add_after_keeps_the_earlier_deadline() -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = DelayingQueue("", clock=clock)
    q.add_after("x", 5.0)
    q.add_after("x", 1.0)  # earlier wins
    q.add_after("y", 1.0)
    q.add_after("y", 5.0)  # later is ignored
    clock.step(1.0)
    assert q.len() == 2
    for _ in range(2):
        q.done(await within(q.get()))
    clock.step(10.0)
    assert q.len() == 0  # neither comes back at t=5
    assert clock.pending() == 0


async def test_add_after_non_positive_delay_adds_immediately() -> None:
    q: DelayingQueue[str] = DelayingQueue("", clock=FakeClock())
    q.add_after("a", 0)
    q.add_after("b", -1.0)
    assert q.len() == 2


async def test_add_after_an_item_already_queued_does_not_duplicate_it() -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = DelayingQueue("", clock=clock)
    q.add("a")
    q.add_after("a", 1.0)
    clock.step(1.0)
    assert q.len() == 1


async def test_shutdown_drops_waiting_items_and_cancels_the_timer() -> None:
    clock = FakeClock()
    q: DelayingQueue[str] = DelayingQueue("test-delaying-shutdown", clock=clock)
    q.add_after("a", 1.0)
    assert clock.pending() == 2  # add_after timer + unfinished-work metrics timer
    q.shutdown()
    assert clock.pending() == 0
    q.add_after("b", 1.0)
    q.add_after("c", 0)
    clock.step(2.0)
    assert q.len() == 0
    with pytest.raises(ShutDown):
        await within(q.get())


async def test_add_after_with_the_real_loop_clock() -> None:
    q: DelayingQueue[str] = DelayingQueue("")
    q.add_after("late", 0.02)
    q.add_after("early", 0.01)
    assert await within(q.get()) == "early"  # timeout only guards against a hang
    assert await within(q.get()) == "late"
    q.shutdown()


# --------------------------------------------------------------------------- RateLimitingQueue


async def test_add_rate_limited_backs_off_and_forget_resets() -> None:
    clock = FakeClock()
    q: RateLimitingQueue[str] = RateLimitingQueue(
        "", ItemExponentialFailureRateLimiter(1.0, 100.0), clock=clock
    )

    async def cycle(first: float, rest: float) -> None:
        q.add_rate_limited("x")
        clock.step(first)
        assert q.len() == 0
        clock.step(rest)
        assert q.len() == 1
        q.done(await within(q.get()))

    await cycle(0.75, 0.25)  # 1 s
    await cycle(1.75, 0.25)  # 2 s
    await cycle(3.75, 0.25)  # 4 s
    assert q.num_requeues("x") == 3
    q.forget("x")
    assert q.num_requeues("x") == 0
    await cycle(0.75, 0.25)  # back to 1 s
    assert q.num_requeues("x") == 1


async def test_rate_limiting_queue_default_limiter_uses_the_queue_clock() -> None:
    clock = FakeClock()
    q: RateLimitingQueue[int] = RateLimitingQueue("", clock=clock)
    for i in range(101):  # the 101st exceeds the burst of 100 -> 0.1 s
        q.add_rate_limited(i)
    clock.step(0.005)
    assert q.len() == 100
    clock.step(0.095)
    assert q.len() == 101
    assert q.num_requeues(0) == 1


# --------------------------------------------------------------------------- metrics


async def test_metrics_depth_adds_and_durations() -> None:
    name, ctl = "test-metrics-depth", "ctl"
    clock = FakeClock()
    q: Queue[str] = Queue(name, controller=ctl, clock=clock)
    assert sample("workqueue_depth", name, ctl) == 0.0
    q.add("a")
    q.add("b")
    q.add("a")  # deduplicated: not an add
    assert sample("workqueue_depth", name, ctl) == 2.0
    assert sample("workqueue_adds_total", name, ctl) == 2.0
    clock.step(1.5)
    a = await within(q.get())
    assert sample("workqueue_depth", name, ctl) == 1.0
    assert sample("workqueue_queue_duration_seconds_count", name, ctl) == 1.0
    assert sample("workqueue_queue_duration_seconds_sum", name, ctl) == 1.5
    clock.step(2.0)
    q.done(a)
    assert sample("workqueue_work_duration_seconds_count", name, ctl) == 1.0
    assert sample("workqueue_work_duration_seconds_sum", name, ctl) == 2.0
    b = await within(q.get())  # waited 3.5 s
    assert sample("workqueue_queue_duration_seconds_sum", name, ctl) == 5.0
    q.add(b)  # counted as an add (and in depth) while processing, like client-go
    assert sample("workqueue_adds_total", name, ctl) == 3.0
    assert sample("workqueue_depth", name, ctl) == 1.0
    q.done(b)
    assert sample("workqueue_depth", name, ctl) == 1.0
    q.done(await within(q.get()))
    assert sample("workqueue_depth", name, ctl) == 0.0
    assert sample("workqueue_work_duration_seconds_count", name, ctl) == 3.0
    q.shutdown()


async def test_metrics_retries() -> None:
    name = "test-metrics-retries"
    clock = FakeClock()
    q: RateLimitingQueue[str] = RateLimitingQueue(
        name, ItemExponentialFailureRateLimiter(1.0, 10.0), clock=clock
    )
    assert sample("workqueue_retries_total", name) == 0.0
    for _ in range(3):
        q.add_rate_limited("x")
    assert sample("workqueue_retries_total", name) == 3.0
    q.add_after("y", 0)  # client-go counts every AddAfter as a retry
    assert sample("workqueue_retries_total", name) == 4.0
    q.shutdown()
    q.add_rate_limited("x")
    assert sample("workqueue_retries_total", name) == 4.0


async def test_metrics_unfinished_work_updated_periodically_until_shutdown() -> None:
    name = "test-metrics-unfinished"
    clock = FakeClock()
    q: Queue[str] = Queue(name, clock=clock)
    q.add("a")
    q.add("b")
    a = await within(q.get())
    clock.step(1.0)
    await within(q.get())
    clock.step(2.0)  # the 500 ms timer fires during the step: no explicit update needed
    assert sample("workqueue_unfinished_work_seconds", name) == 5.0  # 3 s + 2 s
    assert sample("workqueue_longest_running_processor_seconds", name) == 3.0
    q.done(a)
    q.update_unfinished_work()
    assert sample("workqueue_unfinished_work_seconds", name) == 2.0
    assert sample("workqueue_longest_running_processor_seconds", name) == 2.0
    q.shutdown()
    assert clock.pending() == 0
    clock.step(10.0)
    assert sample("workqueue_unfinished_work_seconds", name) == 2.0  # no more updates


async def test_unnamed_queue_emits_no_metrics() -> None:
    clock = FakeClock()
    q: Queue[str] = Queue("", clock=clock)
    q.add("a")
    assert sample("workqueue_adds_total", "") is None
    assert clock.pending() == 0


async def test_metrics_duration_buckets_are_le_bounds_and_survive_folding() -> None:
    """A duration on a bucket bound counts in that bucket (Prometheus ``le``); the queue sorts
    durations into buckets in batches, and a scrape sees every one so far."""
    name = "test-metrics-buckets"
    clock = FakeClock()
    q: Queue[int] = Queue(name, clock=clock)
    waits = [1.0, 0.5, 10.0, 2e-3, 1.0, 5000.0]
    for i, wait in enumerate(waits):
        q.add(i)
        clock.step(wait)
        q.done(await within(q.get()))
    def bucket(le: str) -> float | None:
        return REGISTRY.get_sample_value("workqueue_queue_duration_seconds_bucket",
                                         {"name": name, "controller": "", "le": le})
    assert bucket("0.001") == 0.0
    assert bucket("0.01") == 1.0
    assert bucket("1.0") == 4.0  # 2e-3, 0.5 and both 1.0
    assert bucket("10.0") == 5.0
    assert bucket("1000.0") == 5.0
    assert bucket("+Inf") == 6.0
    assert sample("workqueue_queue_duration_seconds_sum", name) == sum(waits)
    # Past the batch size, the counts still add up.
    for i in range(3000):
        q.add(i)
        q.done(await within(q.get()))
    assert bucket("+Inf") == 3006.0
    assert sample("workqueue_queue_duration_seconds_count", name) == 3006.0
    assert sample("workqueue_work_duration_seconds_count", name) == 3006.0
    assert sample("workqueue_adds_total", name) == 3006.0
    q.shutdown()


async def test_metrics_keep_counting_across_a_new_queue_with_the_same_name() -> None:
    """A controller restarted (leadership lost and won again) gets a new queue with the same labels:
    the counters go on from where they were and depth counts what either queue still holds."""
    name = "test-metrics-restart"
    clock = FakeClock()
    old: Queue[str] = Queue(name, controller="c", clock=clock)
    old.add("a")
    old.add("b")
    old.done(await within(old.get()))
    old.shutdown()
    assert sample("workqueue_depth", name, "c") == 1.0  # "b" never handed out, as in client-go
    new: Queue[str] = Queue(name, controller="c", clock=clock)
    new.add("a")
    new.add("c")
    assert sample("workqueue_adds_total", name, "c") == 4.0
    assert sample("workqueue_depth", name, "c") == 3.0
    assert await within(old.get()) == "b"  # a draining old queue still hands out what it held
    assert sample("workqueue_depth", name, "c") == 2.0
    assert sample("workqueue_adds_total", name, "c") == 4.0
    new.shutdown()
