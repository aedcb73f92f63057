"""The event recorder's per-object state (token buckets, aggregation) costs the same per event
however many objects it has seen, and forgets what expired (docs/operations.md, performance)."""

from __future__ import annotations

import time
import tracemalloc
from types import SimpleNamespace

from substratus.runtime import events as events_module
from substratus.runtime.client import Client
from substratus.runtime.events import NORMAL, EventRecorder
from substratus.runtime.resource import CONFIGMAPS, EVENTS


def fake(uid: str, ns: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": uid, "namespace": ns, "uid": uid}}


def fake_clock(monkeypatch, clock: list[float]) -> None:
    """The recorder's monotonic clock reads ``clock[0]``; everything else keeps the real one."""
    monkeypatch.setattr(events_module, "time", SimpleNamespace(monotonic=lambda: clock[0], time_ns=time.time_ns))


def test_an_event_does_not_copy_the_state_of_every_object_seen() -> None:
    # Not started, so nothing is posted; the queue is large enough that nothing is dropped.
    rec = EventRecorder(Client.__new__(Client), queue_size=10_000, writers=1)
    for i in range(6_000):
        rec.event(fake(f"uid-{i}"), NORMAL, "Tested", "m")
    tracemalloc.start()
    try:
        rec.event(fake("one-more"), NORMAL, "Tested", "m")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Before: past 4,096 objects each event rebuilt the map of every object's bucket (~300 KiB
    # here; 1.2 ms of CPU per event at 10,000 objects).
    assert peak < 16 * 1024, f"one event allocated {peak} bytes with 6,000 objects tracked"
    assert rec.dropped == 0


def test_refilled_buckets_are_forgotten_oldest_first_and_live_ones_kept(monkeypatch) -> None:
    rec = EventRecorder(Client.__new__(Client), queue_size=100, writers=1)
    now = time.monotonic()
    clock = [now]
    fake_clock(monkeypatch, clock)
    for uid in ("a", "b", "c"):
        rec.event(fake(uid), NORMAL, "Tested", "m")
    clock[0] = now + 100
    rec.event(fake("d"), NORMAL, "Tested", "m")
    rec.event(fake("a"), NORMAL, "Tested", "m")  # touched again: refills from now on
    full = rec.burst * rec.refill_seconds
    clock[0] = now + full + 1  # b and c are back at burst; a and d are not
    rec.event(fake("e"), NORMAL, "Tested", "m")
    assert list(rec._buckets) == ["d", "a", "e"]


async def test_aggregation_state_past_its_window_is_forgotten(client: Client, namespace: str, monkeypatch) -> None:
    objs = [await client.create(CONFIGMAPS, {"metadata": {"name": f"agg-{i}", "namespace": namespace}})
            for i in range(3)]
    rec = EventRecorder(client, writers=1)
    now = time.monotonic()
    clock = [now]
    fake_clock(monkeypatch, clock)
    rec.start()
    try:
        rec.event(objs[0], NORMAL, "Tested", "m")
        rec.event(objs[1], NORMAL, "Tested", "m")
        await rec.flush(30)
        clock[0] = now + 300
        rec.event(objs[0], NORMAL, "Tested", "m")  # aggregated: count 2, its window starts again
        await rec.flush(30)
        clock[0] = now + events_module._AGGREGATE_WINDOW + 1
        rec.event(objs[2], NORMAL, "Tested", "m")
        await rec.flush(30)
        assert [k[0] for k in rec._seen] == [objs[0]["metadata"]["uid"], objs[2]["metadata"]["uid"]]
    finally:
        await rec.stop()
    counts = sorted((e["involvedObject"]["name"], e["count"]) for e in (await client.list(EVENTS, namespace))["items"])
    assert counts == [("agg-0", 2), ("agg-1", 1), ("agg-2", 1)]
