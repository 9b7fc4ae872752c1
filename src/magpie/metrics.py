"""Prometheus metrics, one registry per app (no import-time globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "magpie_http_requests",
            "HTTP requests on the data API",
            ["path", "status"],
            registry=self.registry,
        )
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
        self._known_paths: set[str] = set()

    def count(self, path: str, status: int) -> None:
        # Bound label cardinality: unknown paths share one label.
        if path not in self._known_paths:
            if len(self._known_paths) >= 64:
                path = "other"
            else:
                self._known_paths.add(path)
        self.requests.labels(path, str(status)).inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
