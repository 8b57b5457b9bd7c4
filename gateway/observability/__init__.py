"""Request context, structured logs and Prometheus metrics."""
