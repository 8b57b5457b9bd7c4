"""Prometheus metrics, in a registry owned by one app instance (tests build many apps per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Buckets tuned to a sub-10 ms service: the interesting tail is between 1 ms and 100 ms.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lkps_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "lkps_http_request_duration_seconds",
            "Time from request start to the end of the response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.outcomes = Counter(
            "lkps_outcomes",
            "API outcomes by route: ok, or the stable reason of a refusal (session starts, registrations).",
            ["route", "outcome"],
            registry=r,
        )
        self.token_rejections = Counter(
            "lkps_token_rejections", "Entra access tokens refused, by reason.", ["reason"], registry=r
        )
        self.jwks_age = Gauge("lkps_jwks_age_seconds", "Age of the signing keys in use.", registry=r)
        self.jwks_refreshes = Gauge(
            "lkps_jwks_refreshes", "JWKS refresh attempts since start (successful or not).", registry=r
        )
        self.worker_connections = Gauge(
            "lkps_worker_connections",
            "LiveKit Agents worker connections relayed by this process.",
            registry=r,
        )
        self.worker_jobs = Counter(
            "lkps_worker_jobs", "Jobs LiveKit assigned to relayed workers.", registry=r
        )
        self.worker_refusals = Counter(
            "lkps_worker_refusals",
            "Worker connections refused, by reason (handshake, credentials, agent name, availability).",
            ["reason"],
            registry=r,
        )
        self.worker_security_events = Counter(
            "lkps_worker_security_events",
            "Worker relay security events, by kind: a frame outside the allow-list (the connection is "
            "closed), a foreign job, an availability answer over the bounds, another agent's name.",
            ["kind"],
            registry=r,
        )
        self.worker_audit_dropped = Counter(
            "lkps_worker_audit_dropped",
            "Worker relay audit records dropped because the bounded audit queue was full.",
            registry=r,
        )
        self.db_batch_size = Histogram(
            "lkps_session_write_batch_size",
            "Session rows committed per group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.db_commit_latency = Histogram(
            "lkps_session_write_seconds",
            "Duration of one group commit of session rows.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
