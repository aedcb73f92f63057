"""The reconcile contract, as controller-runtime's ``pkg/reconcile``."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import attrs


class Request(NamedTuple):
    """What to reconcile: a name, never an event. Level-triggered by construction.

    A named tuple rather than an attrs class (the project's usual data class) because it is the
    work queue's key: the queue, its metrics and the rate limiters hash and compare it about ten
    times per reconcile, and a tuple does that in C where attrs' generated ``__hash__`` and
    ``__eq__`` are Python calls (measured: 1.4 µs of a 3.1 µs add/get/done cycle; see
    docs/benchmarks.md, work queue). Immutable, ordered, equal by value like controller-runtime's
    ``NamespacedName``.
    """

    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@attrs.frozen
class Result:
    """``requeue_after`` > 0 comes back after that delay (and forgets failures); ``requeue``
    comes back rate-limited. Neither: done until something changes."""

    requeue: bool = False
    requeue_after: float = 0.0


class TerminalError(Exception):
    """An error retrying cannot fix (bad input): counted and logged, never requeued."""


class Reconciler(Protocol):
    async def reconcile(self, request: Request) -> Result: ...
