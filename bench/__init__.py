"""bench: a harness for seed-robustness studies of (multi-teacher) knowledge distillation."""

__version__ = "0.1.0"
