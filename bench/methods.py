"""The table of distillation methods. Each method is a training recipe over one interface:
``run(ctx) -> student`` where ``ctx`` is a ``bench.jobs.DistillContext``.

Adding a method means adding a function and one entry in ``METHODS``: no registration by import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from bench.errors import SpecError


@dataclass(frozen=True)
class Param:
    """A method parameter: its default and the range it must lie in (closed interval)."""

    default: float
    low: float
    high: float
    doc: str


@dataclass(frozen=True)
class Method:
    """A distillation recipe: whether it has single-teacher parts (a primary) and its parameters."""

    name: str
    needs_primary: bool
    params: dict[str, Param]
    run: Callable[[Any], Any]
    doc: str
    convention: str  # the loss convention, recorded with every result

    def defaults(self) -> dict[str, float]:
        return {k: p.default for k, p in self.params.items()}

    def check_param(self, key: str, value: Any, file: str, field: str) -> float:
        p = self.params[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(file, field, f"expected a number, got {value!r}")
        if not p.low <= value <= p.high:
            raise SpecError(file, field, f"expected {p.low:g} <= {key} <= {p.high:g} ({p.doc}), got {value!r}")
        return float(value)


def _run_kd(ctx: Any) -> Any:
    from bench.kd import train_kd

    return train_kd(ctx)


def _run_kd_primary(ctx: Any) -> Any:
    from bench.kd import train_kd_primary

    return train_kd_primary(ctx)


KD_CONVENTION = "alpha*CE + (1-alpha)*T^2*KL(p_t||p_s), batchmean, t = mean of teacher logits"

KD_PARAMS = {
    "temperature": Param(2.0, 1e-3, 1e3, "softmax temperature T of the KD term"),
    "alpha": Param(0.5, 0.0, 1.0, "weight of the hard-label cross-entropy; 1 - alpha goes to T^2*KL"),
}

METHODS: dict[str, Method] = {
    "kd": Method(
        name="kd",
        needs_primary=False,
        params=KD_PARAMS,
        run=_run_kd,
        doc="Hinton KD against softmax(mean of the k teachers' logits / T)",
        convention=KD_CONVENTION,
    ),
    "kd-primary": Method(
        name="kd-primary",
        needs_primary=True,
        params={**KD_PARAMS, "beta": Param(0.5, 0.0, 1.0, "share of the KD term that targets the primary teacher alone")},
        run=_run_kd_primary,
        doc="KD whose soft target mixes the k-teacher mean (1 - beta) and the primary teacher alone (beta): "
            "the simplest method with a single-teacher part, run once per primary",
        convention="alpha*CE + (1-alpha)*T^2*[(1-beta)*KL(p_mean||p_s) + beta*KL(p_primary||p_s)], batchmean",
    ),
}
