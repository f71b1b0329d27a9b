"""The table of distillation methods. Each method is a training recipe over one interface:
``run(ctx) -> student`` where ``ctx`` is a ``bench.jobs.DistillContext``.

Adding a method means adding a function and one entry in ``METHODS``: no registration by import.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from bench.errors import SpecError


@dataclass(frozen=True)
class Param:
    """A method parameter: its default and the range it must lie in (closed interval)."""

    default: float
    low: float
    high: float
    doc: str
    integer: bool = False


@dataclass(frozen=True)
class Method:
    """A distillation recipe: whether it has single-teacher parts (a primary) and its parameters."""

    name: str
    needs_primary: bool
    params: dict[str, Param]
    run: Callable[[Any], Any]
    doc: str
    convention: str  # the loss convention, recorded with every result
    features: str = "none"  # which teacher work is done online, recorded with every result
    check: Callable[[Any, Any, str], None] | None = None  # (teacher spec, student spec, file)
    seed_offsets: tuple[int, ...] = (0,)  # data-order seeds a run derives from its seed s: s + offset

    def defaults(self) -> dict[str, float]:
        return {k: p.default for k, p in self.params.items()}

    def check_param(self, key: str, value: Any, file: str, field: str) -> float:
        p = self.params[key]
        if isinstance(value, bool) or not isinstance(value, int if p.integer else (int, float)):
            raise SpecError(file, field, f"expected {'an integer' if p.integer else 'a number'}, got {value!r}")
        if not p.low <= value <= p.high:
            raise SpecError(file, field, f"expected {p.low:g} <= {key} <= {p.high:g} ({p.doc}), got {value!r}")
        return int(value) if p.integer else float(value)


def _run_kd(ctx: Any) -> Any:
    from bench.kd import train_kd

    return train_kd(ctx)


def _run_kd_primary(ctx: Any) -> Any:
    from bench.kd import train_kd_primary

    return train_kd_primary(ctx)


def _run_tinybert(ctx: Any) -> Any:
    from bench.tinybert import train_tinybert

    return train_tinybert(ctx)


def _run_distilbert(ctx: Any) -> Any:
    from bench.distilbert import train_distilbert

    return train_distilbert(ctx)


def _run_lm_kd(ctx: Any) -> Any:
    from bench.lm import train_lm_kd

    return train_lm_kd(ctx)


def _models_of(kind: str, teacher: Any, student: Any, file: str, method: str, allowed: bool) -> None:
    """Require (allowed=True) or forbid (False) model ``kind`` for both roles."""
    for role, spec in (("teacher", teacher), ("student", student)):
        if (spec.model == kind) != allowed:
            expected = f"'{kind}'" if allowed else f"a model other than '{kind}' (for language models: 'lm-kd')"
            raise SpecError(file, f"{role}.model", f"method '{method}' expected {expected}, got '{spec.model}'")


def _bert_pair(teacher: Any, student: Any, file: str, method: str) -> None:
    for role, spec in (("teacher", teacher), ("student", student)):
        if spec.model != "bert":
            raise SpecError(file, f"{role}.model", f"method '{method}' distils BERT-family encoders; "
                            f"expected 'bert', got '{spec.model}'")


def _check_tinybert(teacher: Any, student: Any, file: str) -> None:
    _bert_pair(teacher, student, file, "tinybert")


def _check_distilbert(teacher: Any, student: Any, file: str) -> None:
    _bert_pair(teacher, student, file, "distilbert")
    for key in ("pretrained", "params"):
        if getattr(student, key):
            raise SpecError(file, f"student.{key}", "method 'distilbert' builds the student from the primary "
                            "teacher (every other layer); expected no student weights or config here")


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
        check=partial(_models_of, "gpt", method="kd", allowed=False),
    ),
    "kd-primary": Method(
        name="kd-primary",
        needs_primary=True,
        params={**KD_PARAMS, "beta": Param(0.5, 0.0, 1.0, "share of the KD term that targets the primary teacher alone")},
        run=_run_kd_primary,
        doc="KD whose soft target mixes the k-teacher mean (1 - beta) and the primary teacher alone (beta): "
            "the simplest method with a single-teacher part, run once per primary",
        convention="alpha*CE + (1-alpha)*T^2*[(1-beta)*KL(p_mean||p_s) + beta*KL(p_primary||p_s)], batchmean",
        check=partial(_models_of, "gpt", method="kd-primary", allowed=False),
    ),
    "tinybert": Method(
        name="tinybert",
        needs_primary=True,
        params={
            "temperature": Param(1.0, 1e-3, 1e3, "temperature of the prediction-layer soft cross-entropy"),
            "ild_epochs": Param(1, 0, 1000, "epochs of intermediate-layer distillation before student.epochs of "
                                "prediction-layer distillation", integer=True),
        },
        run=_run_tinybert,
        doc="TinyBERT task distillation: intermediate layers from the primary, predictions from the k-teacher mean",
        convention="ILD: MSE(E_S W_e, E_T) + sum_m MSE(H_S W_h, H_T[g(m)]) + MSE(attention scores), primary "
                   "teacher, padding excluded; PLD: soft CE(p_mean(T) || p_s(T)), batchmean",
        features="online: primary teacher hidden states and attention scores (ILD)",
        check=_check_tinybert,
        seed_offsets=(0, 1),  # ILD uses the run's seed, PLD seed + 1
    ),
    "distilbert": Method(
        name="distilbert",
        needs_primary=True,
        params={**KD_PARAMS,
                "cos_weight": Param(1.0, 0.0, 100.0, "weight of the cosine loss on the last hidden states")},
        run=_run_distilbert,
        doc="DistilBERT task distillation: student = primary teacher's every other layer; CE + KD (k-teacher "
            "mean) + cosine loss to the primary's last hidden states",
        convention=KD_CONVENTION + " + cos_weight * mean over tokens (1 - cos(h_S, h_primary))",
        features="online: primary teacher last hidden states",
        check=_check_distilbert,
    ),
    "lm-kd": Method(
        name="lm-kd",
        needs_primary=False,
        params=KD_PARAMS,
        run=_run_lm_kd,
        doc="Token-level KD of a causal LM (Gholami & Omar 2023) against the mean of the k teachers' cached "
            "top-K next-token logits",
        convention="per token: alpha*CE + (1-alpha)*T^2*KL(p_t||p_s), mean over tokens; t = mean of the k "
                   "teachers' top-K logits on their union (a teacher's missing entries = its K-th logit), every "
                   "other token in one bucket at the mean tail logit",
        check=partial(_models_of, "gpt", method="lm-kd", allowed=True),
    ),
}
