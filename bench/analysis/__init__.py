"""bench.analysis: see docs/architecture.md."""
