"""bench.methods: see docs/architecture.md."""
