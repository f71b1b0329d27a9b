"""bench.spec: see docs/architecture.md."""
