"""A thread-free client-go ``Indexer``: objects by ``namespace/name`` plus secondary indexes.

Controllers ask questions like "which Models train on Dataset X?" on every event; answering
them from an index keeps that O(matches) instead of a scan over the whole cache.

Objects are kept packed: each as its compact JSON (orjson), decoded on every read. A decoded
Kubernetes object costs three to five times its JSON size in Python dicts and strings (a
Deployment: 12.3 KiB as dicts, 2.9 KiB as JSON), and the cache holds every object of every
watched kind for the process's life, while a reconcile reads a handful; decoding one costs
microseconds (docs/benchmarks.md, memory; docs/operations.md, "What the cache keeps"). Every read
returns a fresh dict, so a caller that modifies what it read cannot corrupt the cache (client-go
asks for a DeepCopy for the same reason). Index values are computed once, when an object is stored.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterable, Iterator

import orjson

from substratus.runtime.resource import object_key

IndexFunc = Callable[[dict], Iterable[str]]

NAMESPACE_INDEX = "namespace"
OWNER_UID_INDEX = "owner-uid"


def namespace_index(obj: dict) -> builtins.list[str]:
    ns = (obj.get("metadata") or {}).get("namespace")
    return [ns] if ns else []


def owner_uid_index(obj: dict) -> builtins.list[str]:
    """Every owner's UID, so children are found from the parent (and GC-style questions answered)."""
    return [ref["uid"] for ref in (obj.get("metadata") or {}).get("ownerReferences") or [] if ref.get("uid")]


def _pack(obj: dict) -> bytes:
    """``obj`` as compact JSON. Copied to an exact-size ``bytes``: orjson returns its write
    buffer, which keeps a multi-KiB allocation behind every short document. What orjson cannot
    encode (an integer beyond 64 bits, a non-finite float: never from the API server, which
    stores int64 and finite float64) goes through ``json``, which round-trips it."""
    try:
        return memoryview(orjson.dumps(obj)).tobytes()
    except orjson.JSONEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def _unpack(data: bytes) -> dict:
    try:
        return orjson.loads(data)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:  # what _pack wrote with json
        return json.loads(data)  # type: ignore[no-any-return]


def resource_version(obj: dict | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


class Indexer:
    """The store behind an informer. Not safe across threads; everything runs on one loop."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None) -> None:
        self._items: dict[str, bytes] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: namespace_index, OWNER_UID_INDEX: owner_uid_index}
        self._indexers.update(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    # --- indexes ------------------------------------------------------------------------------

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        """Register an index; existing objects are indexed at once so it is never half-built."""
        if name in self._indexers:
            if self._indexers[name] is fn:
                return
            raise ValueError(f"index {name!r} already registered")
        self._indexers[name] = fn
        self._indices[name] = {}
        for key, packed in self._items.items():
            self._index_one(name, fn, key, _unpack(packed))

    def has_index(self, name: str) -> bool:
        return name in self._indexers

    def by_index(self, name: str, value: str) -> builtins.list[dict]:
        keys = self._indices[name].get(value, ())
        return [_unpack(self._items[k]) for k in sorted(keys)]

    def index_keys(self, name: str, value: str) -> builtins.list[str]:
        return sorted(self._indices[name].get(value, ()))

    def _index_one(self, name: str, fn: IndexFunc, key: str, obj: dict) -> None:
        index = self._indices[name]
        for value in fn(obj):
            index.setdefault(value, set()).add(key)

    def _unindex_one(self, name: str, fn: IndexFunc, key: str, obj: dict) -> None:
        index = self._indices[name]
        for value in fn(obj):
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]

    # --- store --------------------------------------------------------------------------------

    def get(self, key: str) -> dict | None:
        packed = self._items.get(key)
        return None if packed is None else _unpack(packed)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict]:
        return iter([_unpack(p) for p in self._items.values()])

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def list(self, namespace: str | None = None) -> builtins.list[dict]:
        if namespace is None:
            return [_unpack(p) for p in self._items.values()]
        return self.by_index(NAMESPACE_INDEX, namespace)

    def upsert(self, obj: dict) -> dict | None:
        """Store ``obj``; returns the object it replaced, if any."""
        key = object_key(obj)
        packed = self._items.get(key)
        old = None if packed is None else _unpack(packed)
        if old is not None:
            for name, fn in self._indexers.items():
                self._unindex_one(name, fn, key, old)
        self._items[key] = _pack(obj)
        for name, fn in self._indexers.items():
            self._index_one(name, fn, key, obj)
        return old

    def delete(self, key: str) -> dict | None:
        packed = self._items.pop(key, None)
        old = None if packed is None else _unpack(packed)
        if old is not None:
            for name, fn in self._indexers.items():
                self._unindex_one(name, fn, key, old)
        return old

    def replace(self, objs: Iterable[dict]) -> tuple[builtins.list[dict], builtins.list[tuple[dict, dict]], builtins.list[dict]]:
        """Make the store equal ``objs`` (a relist) and say what changed.

        Returns (added, updated as (old, new) where the resourceVersion moved, deleted with the
        last object we knew) — exactly the events a watch gap swallowed.
        """
        fresh = {object_key(o): o for o in objs}
        added: builtins.list[dict] = []
        updated: builtins.list[tuple[dict, dict]] = []
        deleted = [_unpack(self._items[k]) for k in self._items.keys() - fresh.keys()]
        for obj in deleted:
            self.delete(object_key(obj))
        for key, obj in fresh.items():
            packed = self._items.get(key)
            old = None if packed is None else _unpack(packed)
            if old is None:
                added.append(obj)
            elif resource_version(old) != resource_version(obj):
                updated.append((old, obj))
            else:
                continue
            self.upsert(obj)
        return added, updated, deleted
