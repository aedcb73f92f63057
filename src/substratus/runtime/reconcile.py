"""The reconcile contract, as controller-runtime's ``pkg/reconcile``."""

from __future__ import annotations

from typing import Protocol

import attrs


@attrs.frozen(order=True)
class Request:
    """What to reconcile: a name, never an event. Level-triggered by construction."""

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
