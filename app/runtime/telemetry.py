"""Prometheus metrics of the process: requests, GraphQL operations, errors, DB pool."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "agentrail_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=REGISTRY
)
HTTP_LATENCY = Histogram(
    "agentrail_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=REGISTRY
)
GRAPHQL_OPERATIONS = Counter(
    "agentrail_graphql_operations_total", "GraphQL operations", ["operation", "type"], registry=REGISTRY
)
GRAPHQL_LATENCY = Histogram(
    "agentrail_graphql_operation_duration_seconds",
    "GraphQL operation latency",
    ["operation", "type"],
    registry=REGISTRY,
)
ERRORS = Counter("agentrail_errors_total", "Errors returned to clients, by code", ["code"], registry=REGISTRY)


class PoolCollector(Collector):
    """Reads the SQLAlchemy pool at scrape time, so nothing has to update a gauge on every checkout."""

    def __init__(self) -> None:
        self.pools: list[Any] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = GaugeMetricFamily("agentrail_db_pool_size", "Configured DB pool size")
        out = GaugeMetricFamily("agentrail_db_pool_checked_out", "DB connections in use")
        overflow = GaugeMetricFamily("agentrail_db_pool_overflow", "DB connections beyond the pool size")
        for pool in self.pools:
            size.add_metric([], pool.size())
            out.add_metric([], pool.checkedout())
            overflow.add_metric([], max(pool.overflow(), 0))
        yield size
        yield out
        yield overflow


POOL_COLLECTOR = PoolCollector()
REGISTRY.register(POOL_COLLECTOR)
