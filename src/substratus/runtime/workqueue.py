"""Work queues with client-go's ``util/workqueue`` semantics, on asyncio.

Controllers rely on three guarantees that a plain :class:`asyncio.Queue` does not give:

* an item waiting in the queue is stored once, however often it is added (events coalesce);
* an item is never handed to two workers at once -- re-adding it while it is being processed
  marks it *dirty* and it is queued again only after :meth:`Queue.done`;
* retries are delayed (:class:`DelayingQueue`) and rate limited (:class:`RateLimitingQueue`).

Shutdown follows client-go exactly: after :meth:`Queue.shutdown` (or
:meth:`Queue.shutdown_with_drain`) adds are ignored, but :meth:`Queue.get` keeps handing out the
items that were already queued and raises :class:`ShutDown` only once the queue is empty.
What is dropped is what had not been queued yet: adds after shutdown and the items still
waiting for their :meth:`DelayingQueue.add_after` delay.

Everything here is single-threaded: use a queue only from its event loop's thread. Timers
(the ``add_after`` timer and the periodic unfinished-work metrics) are armed through a
:class:`Clock`; the default :class:`RealClock` needs a running loop, so a queue created outside
one starts its metrics timer on the first :meth:`Queue.get`, and ``add_after`` with a positive
delay must be called inside the loop. Tests use :class:`FakeClock` to move time by hand.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

import attrs

from substratus.runtime.metrics import WORKQUEUE, WorkqueueSeries
from substratus.runtime.ratelimiter import RateLimiter, default_controller_rate_limiter

__all__ = [
    "Cancellable",
    "Clock",
    "DelayingQueue",
    "FakeClock",
    "Queue",
    "RateLimitingQueue",
    "RealClock",
    "ShutDown",
]

T = TypeVar("T", bound=Hashable)

# The Future class itself: ``loop.create_future()`` is one more Python call per wait on asyncio's
# loop, and uvloop's returns this same class.
_Future = asyncio.Future
_FOLD_AT = WorkqueueSeries.FOLD_AT


class ShutDown(Exception):
    """Raised by :meth:`Queue.get` once the queue is shut down and empty: the worker should exit."""


# --------------------------------------------------------------------------- clocks


class Cancellable(Protocol):
    """A scheduled callback that can be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time plus timers, so the delaying queue can be driven by a fake clock in tests."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` once ``now() >= when``."""
        ...


class RealClock:
    """``time.monotonic`` with timers on the running event loop.

    Timers are scheduled with a relative ``call_later`` rather than ``loop.call_at`` so that
    ``now()`` works outside a loop and does not depend on the loop's own clock (e.g. uvloop's).
    """

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        loop = asyncio.get_running_loop()  # RuntimeError outside a loop, on purpose
        return loop.call_later(max(0.0, when - time.monotonic()), callback)


@attrs.define(eq=False)
class _FakeTimer:
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told to; timers fire synchronously inside :meth:`step`.

    Like client-go's fake clock, ``step`` first sets the new time, then runs every due timer in
    deadline order (including ones those timers schedule, if they are due too).
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        timer = _FakeTimer(callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def step(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._now += seconds
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True  # fired: a late cancel() is a no-op
                timer.callback()

    def pending(self) -> int:
        """Timers scheduled and not cancelled: lets tests check that shutdown stops them."""
        return sum(not timer.cancelled for _, _, timer in self._timers)


# --------------------------------------------------------------------------- queues


class Queue(Generic[T]):
    """FIFO of hashable items with client-go's dirty/processing bookkeeping.

    ``name`` (and ``controller``) label the ``workqueue_*`` metrics; an empty name disables them,
    as in client-go. Workers loop ``item = await q.get()`` ... ``q.done(item)`` until
    :class:`ShutDown`. Like :class:`asyncio.Queue`, ``get`` does not yield when an item is ready.
    """

    def __init__(
        self,
        name: str,
        *,
        controller: str = "",
        clock: Clock | None = None,
        unfinished_work_update_period: float = 0.5,
    ) -> None:
        if not unfinished_work_update_period > 0:
            raise ValueError("unfinished_work_update_period must be > 0")
        self.name = name
        self.controller = controller
        self._clock: Clock = clock if clock is not None else RealClock()
        # Every queued item is in _dirty and not in _processing.
        self._queue: deque[T] = deque()
        # Everything that needs processing, queued or re-added while being processed, with the
        # time it was added (client-go's addTimes: the start of its queue duration; 0.0 when the
        # queue has no metrics). One dict for both saves a hash lookup per add and per get.
        self._dirty: dict[T, float] = {}
        # Handed out by get() and not done() yet, with the time it was handed out (client-go's
        # processingStartTimes: the start of its work duration and of its unfinished work).
        self._processing: dict[T, float] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        # A getter has been woken and has not run yet. Adds while it is pending wake nobody else:
        # when it runs and takes an item, it wakes the next idle getter if items remain, and so
        # on down the chain. One wakeup per item that needs a new worker, instead of one per
        # add: a worker that finishes first takes queued items without waiting, and the
        # getters client-go's Signal-per-Add would have woken for them find the queue empty.
        self._waking = False
        self._drainers: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._drain = False
        # Metrics (client-go's defaultQueueMetrics), counted inline: a method call per event
        # was a measurable share of a cycle. None for an unnamed queue, as in client-go.
        self._m: WorkqueueSeries | None = WORKQUEUE.series(name, controller) if name else None
        if self._m is not None:
            self._m.dirty.append(self._dirty)  # depth and adds are read off it
        # time.monotonic itself for the real clock: one Python call less per timestamp.
        self._now: Callable[[], float] = (
            time.monotonic if type(self._clock) is RealClock else self._clock.now)
        self._update_period = unfinished_work_update_period
        self._update_timer: Cancellable | None = None
        self._needs_updater = self._m is not None
        try:
            self._start_updater()
        except RuntimeError:  # no running loop yet: the first get() starts it
            pass

    # -- public API

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def len(self) -> int:
        """Items waiting to be handed out (not those being processed); informational only."""
        return len(self._queue)

    def idle(self) -> bool:
        """Nothing waiting and nothing handed out (items scheduled by ``add_after`` not counted)."""
        return not self._queue and not self._processing

    def add(self, item: T) -> None:
        """Mark ``item`` as needing processing; a no-op if it already waits or after shutdown."""
        if self._shutting_down or item in self._dirty:
            return
        # Not dirty means not waiting: no earlier add time to keep. This is also what counts in
        # workqueue_adds_total and workqueue_depth (read off _dirty at scrape time).
        self._dirty[item] = 0.0 if self._m is None else self._now()
        if item in self._processing:
            return  # queued again by done()
        self._queue.append(item)
        if self._getters and not self._waking:
            self._wake_one()

    async def get(self) -> T:
        """Wait for an item and mark it as being processed; call :meth:`done` with it afterwards.

        Raises :class:`ShutDown` once the queue is shut down and nothing is left in it. Does not
        suspend when an item is ready (no Future, no loop iteration): a worker that finishes
        while items wait takes the next one at once.
        """
        queue = self._queue
        while not queue:
            if self._shutting_down:
                raise ShutDown
            waiter: asyncio.Future[None] = _Future(loop=asyncio.get_running_loop())
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.cancel():
                    self._getters.remove(waiter)
                else:
                    self._waking = False
                    if queue:
                        # Woken for an item we will not take: pass the wakeup on, or it is lost.
                        self._wake_one()
                raise
            self._waking = False
        item = queue.popleft()
        added = self._dirty.pop(item)
        m = self._m
        if m is None:
            self._processing[item] = 0.0
        else:
            now = self._processing[item] = self._now()
            pending = m.queue_pending
            pending.append(now - added)
            if len(pending) >= _FOLD_AT:
                m.fold()  # both histograms: done() does not check its own
            if self._needs_updater:
                self._start_updater()
        if queue and self._getters and not self._waking:
            self._wake_one()  # the chain: more items, more idle workers
        return item

    def done(self, item: T) -> None:
        """Finish processing ``item``; if it was re-added meanwhile, queue it again now.

        Unlike client-go, ``done`` for an item that ``get`` did not hand out is ignored instead
        of queueing a duplicate.
        """
        started = self._processing.pop(item, None)
        if started is None:
            return
        m = self._m
        if m is not None:
            # Folded by get(): every done follows a get, so this list stays within
            # FOLD_AT plus the items in flight.
            m.work_pending.append(self._now() - started)
        if item in self._dirty:
            self._queue.append(item)
            if self._getters and not self._waking:
                self._wake_one()
        if self._drainers and not self._processing:
            self._wake_drainers()

    def shutdown(self) -> None:
        """Ignore further adds and wake every waiting worker; also ends a pending drain."""
        self._drain = False
        self._begin_shutdown()
        self._wake_drainers()

    async def shutdown_with_drain(self) -> None:
        """Like :meth:`shutdown`, then wait until no item is being processed.

        Workers must call :meth:`done` for every item they got (including ones they get after
        the shutdown began, which are waited for too), or this waits for ever; a later
        :meth:`shutdown` makes it return at once.
        """
        self._drain = True
        self._begin_shutdown()
        while self._processing and self._drain:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drainers.append(waiter)
            try:
                await waiter
            finally:
                if waiter.cancel():
                    self._drainers.remove(waiter)

    def update_unfinished_work(self) -> None:
        """Refresh ``workqueue_unfinished_work_seconds`` and ``..._longest_running_processor_seconds``.

        Called every ``unfinished_work_update_period`` seconds until shutdown; public so that
        tests and scrapes can force a fresh value.
        """
        m = self._m
        if m is None:
            return
        now = self._now()
        total = 0.0
        oldest = 0.0
        for started in self._processing.values():
            age = now - started
            total += age
            if age > oldest:
                oldest = age
        m.unfinished = total
        m.longest = oldest

    # -- internals

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            waiter = getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking = True
                return

    def _wake_drainers(self) -> None:
        drainers, self._drainers = self._drainers, []
        for waiter in drainers:
            if not waiter.done():
                waiter.set_result(None)

    def _begin_shutdown(self) -> None:
        if not self._shutting_down:
            self._shutting_down = True
            self._stop_timers()
        getters, self._getters = self._getters, deque()
        for waiter in getters:
            if not waiter.done():
                waiter.set_result(None)

    def _stop_timers(self) -> None:
        """Called once at shutdown; subclasses extend it to cancel their own timers."""
        self._needs_updater = False
        if self._update_timer is not None:
            self._update_timer.cancel()
            self._update_timer = None

    def _start_updater(self) -> None:
        if not self._needs_updater or self._shutting_down:
            return
        self._update_timer = self._clock.call_at(
            self._clock.now() + self._update_period, self._on_update_tick
        )
        self._needs_updater = False

    def _on_update_tick(self) -> None:
        self._update_timer = None
        if self._shutting_down:
            return
        self.update_unfinished_work()
        self._update_timer = self._clock.call_at(
            self._clock.now() + self._update_period, self._on_update_tick
        )


class DelayingQueue(Queue[T]):
    """A :class:`Queue` that can add an item after a delay, for requeue-after and backoff.

    Waiting items live in a heap driven by one clock timer, armed for the earliest deadline.
    An item waiting twice keeps the earlier deadline. Waiting items are not in the queue (not
    counted by :meth:`len`) and are dropped at shutdown, like client-go.
    """

    def __init__(
        self,
        name: str,
        *,
        controller: str = "",
        clock: Clock | None = None,
        unfinished_work_update_period: float = 0.5,
    ) -> None:
        super().__init__(
            name,
            controller=controller,
            clock=clock,
            unfinished_work_update_period=unfinished_work_update_period,
        )
        # (ready_at, seq, item); entries whose seq no longer matches _waiting_by_item are stale.
        self._waiting: list[tuple[float, int, T]] = []
        self._waiting_by_item: dict[T, tuple[float, int]] = {}
        self._seq = itertools.count()
        self._timer: Cancellable | None = None
        self._timer_at = math.inf

    def add_after(self, item: T, delay: float) -> None:
        """Add ``item`` once ``delay`` seconds have passed; at once if ``delay <= 0``.

        Counts in ``workqueue_retries_total`` (client-go counts every AddAfter, so
        ``add_rate_limited`` and a reconciler's requeue-after both show up there).
        """
        if self._shutting_down:
            return
        if self._m is not None:
            self._m.retries += 1
        if delay <= 0:
            self.add(item)
            return
        ready_at = self._clock.now() + delay
        existing = self._waiting_by_item.get(item)
        if existing is not None and existing[0] <= ready_at:
            return
        seq = next(self._seq)
        self._waiting_by_item[item] = (ready_at, seq)
        heapq.heappush(self._waiting, (ready_at, seq, item))
        if ready_at < self._timer_at:
            self._arm(ready_at)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._clock.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        if self._shutting_down:
            return
        heap = self._waiting
        by_item = self._waiting_by_item
        now = self._clock.now()
        while heap and heap[0][0] <= now:
            _, seq, item = heapq.heappop(heap)
            current = by_item.get(item)
            if current is not None and current[1] == seq:
                del by_item[item]
                self.add(item)
        # Drop stale heads so the timer is armed for a deadline that still matters.
        while heap:
            _, seq, item = heap[0]
            current = by_item.get(item)
            if current is not None and current[1] == seq:
                break
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])

    def _stop_timers(self) -> None:
        super()._stop_timers()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        self._waiting.clear()
        self._waiting_by_item.clear()


class RateLimitingQueue(DelayingQueue[T]):
    """A :class:`DelayingQueue` whose retries are paced by a :class:`RateLimiter`.

    Call :meth:`forget` when an item succeeds (or is given up), else its backoff keeps growing.
    The default limiter is controller-runtime's, with its token bucket on this queue's clock.
    """

    def __init__(
        self,
        name: str,
        rate_limiter: RateLimiter | None = None,
        *,
        controller: str = "",
        clock: Clock | None = None,
        unfinished_work_update_period: float = 0.5,
    ) -> None:
        super().__init__(
            name,
            controller=controller,
            clock=clock,
            unfinished_work_update_period=unfinished_work_update_period,
        )
        self.rate_limiter: RateLimiter = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter(now=self._clock.now)
        )

    def add_rate_limited(self, item: T) -> None:
        """Add ``item`` after the delay the rate limiter asks for (which also counts the requeue)."""
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """Reset the limiter's backoff for ``item``; it still needs :meth:`done`."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.rate_limiter.num_requeues(item)
