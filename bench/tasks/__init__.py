"""bench.tasks: see docs/architecture.md."""
