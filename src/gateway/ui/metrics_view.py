"""The gateway's own Prometheus metrics, summed for the health page: one total per family
(counters and gauges add their samples, histograms count their observations), read from
the registry `/metrics` serves, so in multiprocess mode they cover every worker."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.registry import Collector

from gateway.metrics import flush, multiprocess_dir

PREFIX = "gateway_"
BREAKDOWN_MAX = 8


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str
    help: str
    total: float
    breakdown: list[tuple[str, float]]
    """The largest label sets and their values, at most `BREAKDOWN_MAX`."""


def _source() -> Collector:
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def _counted(kind: str, sample_name: str, family: str) -> bool:
    if kind == "counter":
        return sample_name == family + "_total" or sample_name == family
    if kind in {"histogram", "summary"}:
        return sample_name == family + "_count"
    return kind == "gauge" and sample_name == family


def summary() -> list[Family]:
    flush()
    families = []
    for metric in _source().collect():
        if not metric.name.startswith(PREFIX):
            continue
        rows: dict[str, float] = {}
        for sample in metric.samples:
            if not _counted(metric.type, sample.name, metric.name):
                continue
            labels = ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "pid")
            rows[labels] = rows.get(labels, 0.0) + sample.value
        top = sorted(rows.items(), key=lambda row: -row[1])[:BREAKDOWN_MAX]
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        families.append(Family(name, metric.type, metric.documentation, sum(rows.values()), top))
    return sorted(families, key=lambda f: f.name)
