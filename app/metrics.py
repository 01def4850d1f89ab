"""Prometheus metrics: request counts and latency per route, jobs by status, the supervised
worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.embedded.worker_status import WorkerStatus


class Metrics:
    def __init__(self, worker_status: Callable[[], WorkerStatus | None] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "posecompress_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "posecompress_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.jobs = Gauge("posecompress_jobs", "Jobs by status", ["status"], registry=self.registry)
        if worker_status is not None:
            self.registry.register(_WorkerCollector(worker_status))


class _WorkerCollector(Collector):
    """The supervised worker (``posecompress serve`` only), read at each scrape."""

    def __init__(self, worker_status: Callable[[], WorkerStatus | None]) -> None:
        self.worker_status = worker_status

    def collect(self) -> Iterator[Metric]:
        status = self.worker_status()
        if status is None:
            return
        yield GaugeMetricFamily(
            "posecompress_worker_up", "1 while the supervised worker runs", value=int(status.up)
        )
        yield GaugeMetricFamily(
            "posecompress_worker_exits_last_minute",
            "Exits of the supervised worker in the last minute",
            value=status.exits_last_minute,
        )


class MetricsMiddleware:
    """Counts requests by route template (not raw path, to bound label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
