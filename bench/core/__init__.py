"""bench.core: see docs/architecture.md."""
