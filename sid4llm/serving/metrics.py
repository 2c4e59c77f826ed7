"""What a team watches the server with: Prometheus metrics from the ``prometheus_client`` library, served at
``/metrics``. Each app has its own registry (two apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """Requests and latencies by endpoint and status, batch sizes, queue depth, words written, requests dropped
    because their client left, and which model versions are loaded."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sid4llm_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("sid4llm_request_seconds", "Seconds from request to response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_users = Histogram("sid4llm_batch_users", "Users decoded in one batch of the trie search",
                                     ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.queue = Gauge("sid4llm_queue_depth", "Recommendation requests waiting for a batch", ["model"], registry=r)
        self.tokens = Counter("sid4llm_completion_tokens", "Tokens of chat answers written", ["model"], registry=r)
        self.dropped = Counter("sid4llm_dropped_requests", "Queued requests not decoded because their client had "
                               "left or their time was up", ["model", "reason"], registry=r)
        self.loaded = Gauge("sid4llm_model_loaded", "1 for each model version being served (1 on the default too)",
                            ["model", "default"], registry=r)
        self.swaps = Counter("sid4llm_model_loads", "Model versions loaded while serving, by outcome", ["outcome"],
                             registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def show_models(self, names: list[str], default: str) -> None:
        self.loaded.clear()
        for name in names:
            self.loaded.labels(model=name, default=str(name == default).lower()).set(1)
