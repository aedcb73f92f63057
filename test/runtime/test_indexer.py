"""The informer's store: objects kept packed, every read a fresh copy, indexes kept in step."""

from __future__ import annotations

from substratus.runtime.indexer import NAMESPACE_INDEX, OWNER_UID_INDEX, Indexer


def _cm(name: str, ns: str = "a", rv: str = "1", owner: str | None = None, **data: str) -> dict:
    meta: dict = {"name": name, "namespace": ns, "resourceVersion": rv}
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "kind": "Dataset", "name": "d", "controller": True}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def test_reads_are_equal_fresh_copies_that_cannot_change_the_store() -> None:
    store = Indexer()
    obj = _cm("x", owner="u1", key="value")
    assert store.upsert(obj) is None
    got = store.get("a/x")
    assert got == obj and got is not obj
    got["data"]["key"] = "changed by a careless reader"
    got["metadata"]["labels"] = {"x": "y"}
    assert store.get("a/x") == obj
    assert store.list("a") == [obj] and store.list() == [obj] and list(store) == [obj]
    assert store.by_index(OWNER_UID_INDEX, "u1") == [obj]


def test_upsert_delete_and_replace_report_the_objects_they_replaced() -> None:
    store = Indexer()
    store.upsert(_cm("x", owner="u1"))
    old = store.upsert(_cm("x", rv="2", owner="u2"))
    assert old == _cm("x", owner="u1")
    assert store.by_index(OWNER_UID_INDEX, "u1") == [] and len(store.by_index(OWNER_UID_INDEX, "u2")) == 1
    store.upsert(_cm("y", ns="b"))
    added, updated, deleted = store.replace([_cm("x", rv="3"), _cm("z")])
    assert [o["metadata"]["name"] for o in added] == ["z"]
    assert [(o["metadata"]["resourceVersion"], n["metadata"]["resourceVersion"]) for o, n in updated] == [("2", "3")]
    assert deleted == [_cm("y", ns="b")]
    assert store.index_keys(NAMESPACE_INDEX, "b") == [] and store.keys() == ["a/x", "a/z"]
    assert store.delete("a/z") == _cm("z") and store.delete("a/z") is None


def test_an_index_added_later_covers_what_is_stored() -> None:
    store = Indexer()
    store.upsert(_cm("x", owner="u1", team="ml"))
    store.add_indexer("team", lambda o: [o["data"]["team"]] if "team" in o.get("data", {}) else [])
    assert [o["metadata"]["name"] for o in store.by_index("team", "ml")] == ["x"]


def test_values_orjson_cannot_encode_round_trip() -> None:
    """Never from the API server (int64, finite float64), but a store must not lose or refuse them."""
    store = Indexer()
    obj = _cm("x")
    obj["spec"] = {"big": 2**70, "inf": float("inf")}
    store.upsert(obj)
    assert store.get("a/x") == obj
