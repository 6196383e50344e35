"""Prometheus metrics of the gateway (its own registry, served at `/metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class GatewayMetrics:
    """Requests, latency and errors by route and status; texts and tokens served by route."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("bge_m3_gateway_requests_total", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("bge_m3_gateway_request_seconds", "Time to answer a request, by route",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.errors = Counter("bge_m3_gateway_errors_total", "Requests answered with an error status, by route "
                              "and status", ["route", "status"], registry=self.registry)
        self.texts = Counter("bge_m3_gateway_texts_total", "Texts (or documents) served, by route", ["route"],
                             registry=self.registry)
        self.tokens = Counter("bge_m3_gateway_tokens_total", "Tokens of the texts served, by route", ["route"],
                              registry=self.registry)

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def served(self, route: str, texts: int, tokens: int = 0) -> None:
        """Count the texts and tokens one request served."""
        self.texts.labels(route).inc(texts)
        if tokens:
            self.tokens.labels(route).inc(tokens)
