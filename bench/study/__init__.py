"""bench.study: see docs/architecture.md."""
