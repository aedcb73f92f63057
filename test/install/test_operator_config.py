"""Operator flags: leader-election timings reach the manager and impossible ones are refused."""

from __future__ import annotations

import pytest

from substratus.config import OperatorConfig
from substratus.operator import manager_options


def test_lease_timings_come_from_flags_and_environment() -> None:
    cfg = OperatorConfig.from_sources(environ={"SUBSTRATUS_LEADER_ELECTION_LEASE_DURATION": "30",
                                               "SUBSTRATUS_LEADER_ELECTION_RENEW_DEADLINE": "20",
                                               "SUBSTRATUS_LEADER_ELECTION_RETRY_PERIOD": "4"})
    opts = manager_options(cfg)
    assert (opts.lease_duration, opts.renew_deadline, opts.retry_period) == (30, 20, 4)
    defaults = manager_options(OperatorConfig())
    assert (defaults.lease_duration, defaults.renew_deadline, defaults.retry_period) == (15, 10, 2)


@pytest.mark.parametrize(("lease", "renew", "retry", "message"), [
    (10, 10, 2, r"greater than --leader-election-renew-deadline \(SUBSTRATUS_LEADER_ELECTION_RENEW_DEADLINE\)"),
    (15, 2, 2, r"1.2 x --leader-election-retry-period \(SUBSTRATUS_LEADER_ELECTION_RETRY_PERIOD\)"),
    (15, 10, 0, "at least 1 s"),
])
def test_impossible_lease_timings_are_refused(lease: int, renew: int, retry: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorConfig.from_sources(environ={"SUBSTRATUS_LEADER_ELECTION_LEASE_DURATION": str(lease),
                                             "SUBSTRATUS_LEADER_ELECTION_RENEW_DEADLINE": str(renew),
                                             "SUBSTRATUS_LEADER_ELECTION_RETRY_PERIOD": str(retry)})


def test_object_count_interval_below_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match=r"SUBSTRATUS_OBJECT_COUNT_INTERVAL\) must be at least 1"):
        OperatorConfig.from_sources(environ={"SUBSTRATUS_OBJECT_COUNT_INTERVAL": "0"})
