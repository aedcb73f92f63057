"""The drift check compares what we render with what the API server keeps, as the server means it.

(The end-to-end proof — zero requests for converged objects of every kind, through resync and
restart — is ``test/reliability/test_converged.py``; these pin the rules one by one.)
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from substratus.controllers.diff import is_subset, parse_quantity


@pytest.mark.parametrize(("desired", "actual"), [
    ({"env": []}, {}),                                     # omitempty drops an empty list
    ({"env": []}, {"env": None}),
    ({"annotations": {}}, {}),
    ({"name": "X", "value": ""}, {"name": "X"}),           # EnvVar.value omitempty
    ({"readOnly": False, "name": "out"}, {"name": "out"}),  # VolumeMount.readOnly omitempty
    ({"hostPort": 0}, {}),
    ({"a": {"b": [], "c": None}}, {}),                     # a nested object of nothing
    ({"replicas": 1}, {"replicas": 1, "revisionHistoryLimit": 10}),  # server defaults ignored
    ({"requests": {"memory": "1024Mi", "cpu": "0.5"}}, {"requests": {"memory": "1Gi", "cpu": "500m"}}),
    ({"limits": {"nvidia.com/gpu": 1}}, {"limits": {"nvidia.com/gpu": "1"}}),
    ({"port": 8080}, {"port": 8080}),
])
def test_same_as_the_server_means_it(desired, actual) -> None:
    assert is_subset(desired, actual)


@pytest.mark.parametrize(("desired", "actual"), [
    ({"env": [{"name": "A", "value": "1"}]}, {}),
    ({"env": []}, {"env": [{"name": "HAND", "value": "edit"}]}),   # someone added one: drift
    ({"name": "X", "value": "1"}, {"name": "X"}),
    ({"readOnly": True}, {}),
    ({"value": "1"}, {"value": "1.0"}),                  # env values are strings, not quantities
    ({"requests": {"memory": "1Gi"}}, {"requests": {"memory": "1G"}}),
    ({"flag": True}, {"flag": 1}),
    ({"replicas": 1}, {"replicas": 2}),
    ({"a": [1, 2]}, {"a": [2, 1]}),
])
def test_different(desired, actual) -> None:
    assert not is_subset(desired, actual)


def test_parse_quantity() -> None:
    assert parse_quantity("10Gi") == 10 * 2**30
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("1e3") == 1000 == parse_quantity("1k")
    assert parse_quantity("2E") == 2 * 10**18
    assert parse_quantity(2) == 2
    assert parse_quantity("ten") is None and parse_quantity(True) is None and parse_quantity(None) is None
