"""bench.models: see docs/architecture.md."""
