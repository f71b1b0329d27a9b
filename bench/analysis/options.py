"""The fixed choices of the report's options, known without loading pandas (`bench --help` lists them)."""

from __future__ import annotations

# what a student is charged for its teachers in the compute figures (analysis.stats.expected_by_budget)
TEACHER_COST_POLICIES = ("full", "amortised", "free")

# the formats of `bench export --to` (analysis.export.EXPORTERS has one function per name)
EXPORT_TARGETS = ("tensorboard", "mlflow", "wandb", "rliable", "parquet")
