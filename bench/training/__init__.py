"""bench.training: see docs/architecture.md."""
