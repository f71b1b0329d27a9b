"""bench.engines: see docs/architecture.md."""
