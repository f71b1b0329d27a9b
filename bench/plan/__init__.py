"""bench.plan: see docs/architecture.md."""
