"""bench.driver: see docs/architecture.md."""
