"""Prometheus metrics, one registry per app (no import-time globals).

Request counts are kept in a plain dict on the hot path and turned into a Prometheus
counter only when ``/metrics`` is scraped: a labelled ``Counter.inc()`` per request costs
more than the rest of the request's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class _RequestCounts(Collector):
    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("magpie_http_requests", "HTTP requests on the data API", labels=["path", "status"])
        for (path, status), value in sorted(self.counts.items()):
            family.add_metric([path, str(status)], value)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = _RequestCounts()
        self.registry.register(self._requests)
        self.batch_size = Histogram(
            "magpie_writer_batch_size",
            "Requests per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "magpie_writer_batch_seconds", "Time to run and commit one batch", registry=self.registry
        )
        self.deliveries = Counter(
            "magpie_deliveries",
            "Push deliveries by provider and status",
            ["provider", "status"],
            registry=self.registry,
        )

        self.work_item_failures = Counter(
            "magpie_work_item_failures",
            "Dispatch work items that failed, by what happened next (retried, given_up)",
            ["result"],
            registry=self.registry,
        )

    def count(self, path: str, status: int) -> None:
        counts = self._requests.counts
        key = (path, status)
        if key in counts:
            counts[key] += 1
        elif len(counts) < 256:  # bound label cardinality: unknown paths share one label
            counts[key] = 1
        else:
            counts[("other", status)] = counts.get(("other", status), 0) + 1

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
