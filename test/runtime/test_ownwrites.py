"""The bookkeeping behind "the echo of our own write wakes nobody" (runtime/ownwrites.py): which
live event is whose echo, in either arrival order, and that its memory stays bounded."""

from __future__ import annotations

from substratus.runtime.ownwrites import OwnWrites, note_write
from substratus.runtime.reconcile import Request
from substratus.runtime.resource import CONFIGMAPS, SECRETS


def obj(name: str, rv: str, ns: str = "ns") -> dict:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv}}


def tracking() -> OwnWrites:
    own = OwnWrites()
    own.track(CONFIGMAPS)
    return own


R, OTHER = Request("ns", "r"), Request("ns", "other")


def test_echo_after_the_answer_is_skipped_once() -> None:
    own = tracking()
    token = own.begin(R)
    note_write(CONFIGMAPS, obj("c", "10"))
    assert own.end(R, token) is False
    assert own.observe(CONFIGMAPS, obj("c", "10"))[0] == R
    assert own.observe(CONFIGMAPS, obj("c", "10"))[0] is None, "each write is skipped once"
    assert len(own) == 0


def test_echo_before_the_answer_is_held_until_the_reconcile_ends() -> None:
    own = tracking()
    token = own.begin(R)
    writer, event = own.observe(CONFIGMAPS, obj("c", "10"))  # the watch won the race
    assert writer is None and event is not None
    assert own.defer(R, event), "held: R's reconcile is running"
    assert not own.defer(OTHER, event), "not running: enqueued at once"
    note_write(CONFIGMAPS, obj("c", "10"))  # then the write's answer
    assert own.end(R, token) is False, "it was R's own echo"
    assert len(own) == 0


def test_someone_elses_version_while_running_enqueues_again() -> None:
    own = tracking()
    token = own.begin(R)
    note_write(CONFIGMAPS, obj("c", "10"))
    writer, event = own.observe(CONFIGMAPS, obj("c", "11"))  # a newer version, not ours
    assert writer is None and event is not None and own.defer(R, event)
    assert own.end(R, token) is True
    assert own.observe(CONFIGMAPS, obj("c", "10"))[0] is None, "the newer version ended the entry"


def test_a_later_reconcile_of_the_same_request_forgets_earlier_writes() -> None:
    own = tracking()
    token = own.begin(R)
    note_write(CONFIGMAPS, obj("c", "10"))
    own.end(R, token)
    token = own.begin(R)  # it may read the cache before the echo of "10" arrived
    own.end(R, token)
    assert own.observe(CONFIGMAPS, obj("c", "10"))[0] is None
    assert len(own) == 0


def test_only_writes_inside_a_reconcile_of_watched_kinds_are_remembered() -> None:
    own = tracking()
    note_write(CONFIGMAPS, obj("outside", "5"))  # no reconcile running
    token = own.begin(R)
    note_write(SECRETS, obj("unwatched", "6"))  # never echoed to this controller
    note_write(CONFIGMAPS, None)  # e.g. a DELETE's empty answer
    own.end(R, token)
    assert len(own) == 0


def test_memory_is_bounded_and_deletes_forget() -> None:
    own = OwnWrites(limit=100)
    own.track(CONFIGMAPS)
    token = own.begin(R)
    for i in range(1000):
        note_write(CONFIGMAPS, obj(f"c{i}", str(i + 1)))
    own.end(R, token)
    assert len(own) == 100, "the oldest are dropped (at most one extra reconcile each)"
    assert own.observe(CONFIGMAPS, obj("c999", "1000"))[0] == R
    own.forget(CONFIGMAPS, obj("c998", "999"))
    assert own.observe(CONFIGMAPS, obj("c998", "999"))[0] is None
    assert len(own) == 98


def test_one_event_mapped_twice_to_the_running_request_is_held_once() -> None:
    """An update maps both its old and its new object: the same request twice."""
    own = tracking()
    token = own.begin(R)
    _, event = own.observe(CONFIGMAPS, obj("c", "10"))
    assert event is not None
    assert own.defer(R, event) and own.defer(R, event)
    note_write(CONFIGMAPS, obj("c", "10"))
    assert own.end(R, token) is False
