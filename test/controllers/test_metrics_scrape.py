"""substratus_objects and substratus_time_to_ready_seconds as Prometheus scrapes them from a
running operator: counts follow the cache, and a Dataset turning ready is observed exactly once."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from test_artifacts import dataset

from substratus.controllers.resources import DATASETS
from substratus.testing.wait import eventually


async def scrape(operator) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = operator.manager.bound_ports["metrics"]
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def objects(samples, namespace: str, ready: str) -> float | None:
    return samples.get(("substratus_objects", (("kind", "Dataset"), ("namespace", namespace), ("ready", ready))))


def ready_count(samples) -> float:
    return samples.get(("substratus_time_to_ready_seconds_count", (("kind", "Dataset"),)), 0.0)


async def test_objects_and_time_to_ready_are_scraped_from_the_operator(operator, namespace: str) -> None:
    before = ready_count(await scrape(operator))
    for name in ("a", "b"):
        await operator.client.create(DATASETS, dataset(name, namespace))

    async def both_ready():
        s = await scrape(operator)
        return s if objects(s, namespace, "true") == 2 else None

    samples = await eventually(both_ready, timeout=60)
    assert objects(samples, namespace, "false") == 0
    assert ready_count(samples) == before + 2
    # More reconciles of ready objects (a resync, a label change) observe nothing new.
    await operator.client.patch(DATASETS, "a", {"metadata": {"labels": {"touched": "yes"}}}, namespace)
    await eventually(lambda: (operator.manager.cache.get(DATASETS, "a", namespace) or {})
                     .get("metadata", {}).get("labels", {}).get("touched"))
    assert ready_count(await scrape(operator)) == before + 2
