"""The table of distillation methods. Each method is a training recipe over one interface:
``run(ctx) -> student`` where ``ctx`` is a ``bench.methods.context.DistillContext``.

Adding a method means adding a function and one entry in ``METHODS``: no registration by import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.core.errors import SpecError
from bench.core.plugins import Table


@dataclass(frozen=True)
class Param:
    """A method parameter: its default and the range it (or each of its entries) must lie in.

    ``kind`` is "number", "integer" or "indices" (a non-empty increasing list of integers, e.g.
    teacher layers; not a grid axis). A ``None`` default means "the method decides at run time"
    and the parameter is left out of the job's identity until the spec sets it."""

    default: float | None
    low: float
    high: float
    doc: str
    kind: str = "number"


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
    check: Callable[[Any, Any, dict, str], None] | None = None  # (teacher spec, student spec, params, file)
    seed_offsets: tuple[int, ...] = (0,)  # data-order seeds a run derives from its seed s: s + offset
    # run.stack: (ctx) -> (fresh student, training.stack.StackLoss), for methods whose only training
    # is one loss over per-example targets; None: the method's jobs always run alone
    stack_setup: Callable[[Any], tuple[Any, Any]] | None = None

    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items() if p.default is not None}

    def check_param(self, key: str, value: Any, file: str, field: str) -> Any:
        """The validated value of parameter ``key`` (a float, an int or a tuple of ints)."""
        p = self.params[key]
        if p.kind == "indices":
            if (
                not isinstance(value, list)
                or not value
                or any(isinstance(v, bool) or not isinstance(v, int) or not p.low <= v <= p.high for v in value)
                or sorted(set(value)) != value
            ):
                raise SpecError(
                    file,
                    field,
                    f"expected an increasing list of distinct integers in "
                    f"[{p.low:g}, {p.high:g}] ({p.doc}), got {value!r}",
                )
            return tuple(value)
        integer = p.kind == "integer"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise SpecError(file, field, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if not p.low <= value <= p.high:
            raise SpecError(file, field, f"expected {p.low:g} <= {key} <= {p.high:g} ({p.doc}), got {value!r}")
        return int(value) if integer else float(value)


def _run_kd(ctx: Any) -> Any:
    from bench.methods.kd import train_kd  # lazy: the recipes import torch; `bench plan` reads this table without it

    return train_kd(ctx)


def _run_kd_primary(ctx: Any) -> Any:
    from bench.methods.kd import (
        train_kd_primary,  # lazy: the recipes import torch; `bench plan` reads this table without it
    )

    return train_kd_primary(ctx)


def _setup_kd(ctx: Any) -> tuple[Any, Any]:
    from bench.methods.kd import setup_kd  # lazy: the recipes import torch; `bench plan` reads this table without it

    return setup_kd(ctx)


def _setup_kd_primary(ctx: Any) -> tuple[Any, Any]:
    from bench.methods.kd import (
        setup_kd_primary,  # lazy: the recipes import torch; `bench plan` reads this table without it
    )

    return setup_kd_primary(ctx)


def _run_tinybert(ctx: Any) -> Any:
    from bench.methods.tinybert import (
        train_tinybert,  # lazy: the recipes import torch; `bench plan` reads this table without it
    )

    return train_tinybert(ctx)


def _run_distilbert(ctx: Any) -> Any:
    from bench.methods.distilbert import (
        train_distilbert,  # lazy: the recipes import torch; `bench plan` reads this table without it
    )

    return train_distilbert(ctx)


def _run_lm_kd(ctx: Any) -> Any:
    from bench.methods.lm_kd import (
        train_lm_kd,  # lazy: the recipes import torch; `bench plan` reads this table without it
    )

    return train_lm_kd(ctx)


def _models_of(kind: str, teacher: Any, student: Any, params: dict, file: str, method: str, allowed: bool) -> None:
    """Require (allowed=True) or forbid (False) model ``kind`` for both roles."""
    for role, spec in (("teacher", teacher), ("student", student)):
        if (spec.model == kind) != allowed:
            expected = f"'{kind}'" if allowed else f"a model other than '{kind}' (for language models: 'lm-kd')"
            raise SpecError(file, f"{role}.model", f"method '{method}' expected {expected}, got '{spec.model}'")


def _bert_pair(teacher: Any, student: Any, file: str, method: str) -> None:
    for role, spec in (("teacher", teacher), ("student", student)):
        if spec.model != "bert":
            raise SpecError(
                file,
                f"{role}.model",
                f"method '{method}' distils BERT-family encoders; expected 'bert', got '{spec.model}'",
            )


def _check_tinybert(teacher: Any, student: Any, params: dict, file: str) -> None:
    _bert_pair(teacher, student, file, "tinybert")


def _check_distilbert(teacher: Any, student: Any, params: dict, file: str) -> None:
    """The student starts from ``student.pretrained`` or from the primary's ``layers``, not both;
    layer indices are checked here when the teacher's depth is known without loading weights."""
    _bert_pair(teacher, student, file, "distilbert")
    if student.params:
        raise SpecError(
            file,
            "student.params",
            "method 'distilbert' takes the student's config from "
            "student.pretrained or from the primary teacher; expected no student params",
        )
    layers = params.get("layers")
    if student.pretrained and layers is not None:
        raise SpecError(
            file,
            "method.layers",
            "the student starts from student.pretrained; expected no "
            "teacher layers to copy (or remove student.pretrained to build it from the primary)",
        )
    if layers is not None and teacher.pretrained is None:
        depth = teacher.params.get("num_hidden_layers", 12)
        if max(layers) >= depth:
            raise SpecError(
                file,
                "method.layers",
                f"expected teacher layer indices below {depth} (the teacher's num_hidden_layers), got {list(layers)}",
            )


KD_CONVENTION = "alpha*CE + (1-alpha)*T^2*KL(p_t||p_s), batchmean, t = mean of teacher logits"

KD_PARAMS = {
    "temperature": Param(2.0, 1e-3, 1e3, "softmax temperature T of the KD term"),
    "alpha": Param(0.5, 0.0, 1.0, "weight of the hard-label cross-entropy; 1 - alpha goes to T^2*KL"),
}

BUILTIN_METHODS: dict[str, Method] = {
    "kd": Method(
        name="kd",
        needs_primary=False,
        params=KD_PARAMS,
        run=_run_kd,
        doc="Hinton KD against softmax(mean of the k teachers' logits / T)",
        convention=KD_CONVENTION,
        check=partial(_models_of, "gpt", method="kd", allowed=False),
        stack_setup=_setup_kd,
    ),
    "kd-primary": Method(
        name="kd-primary",
        needs_primary=True,
        params={
            **KD_PARAMS,
            "beta": Param(0.5, 0.0, 1.0, "share of the KD term that targets the primary teacher alone"),
        },
        run=_run_kd_primary,
        doc="KD whose soft target mixes the k-teacher mean (1 - beta) and the primary teacher alone (beta): "
        "the simplest method with a single-teacher part, run once per primary",
        convention="alpha*CE + (1-alpha)*T^2*[(1-beta)*KL(p_mean||p_s) + beta*KL(p_primary||p_s)], batchmean",
        check=partial(_models_of, "gpt", method="kd-primary", allowed=False),
        stack_setup=_setup_kd_primary,
    ),
    "tinybert": Method(
        name="tinybert",
        needs_primary=True,
        params={
            "temperature": Param(1.0, 1e-3, 1e3, "temperature of the prediction-layer soft cross-entropy"),
            "ild_epochs": Param(
                1,
                0,
                1000,
                "epochs of intermediate-layer distillation before student.epochs of prediction-layer distillation",
                kind="integer",
            ),
            "ild_lr": Param(
                None,
                1e-8,
                10.0,
                "learning rate of intermediate-layer distillation (TinyBERT's code: "
                "5e-5); default student.lr, which the prediction-layer stage uses",
            ),
        },
        run=_run_tinybert,
        doc="TinyBERT task distillation: intermediate layers from the primary, predictions from the k-teacher mean",
        convention="ILD: MSE(E_S W_e, E_T) + sum_m MSE(H_S W_h, H_T[g(m)]) + MSE(attention scores), primary "
        "teacher, padding excluded, constant lr; PLD: soft CE(p_mean(T) || p_s(T)), mean over batch and classes",
        features="online: primary teacher hidden states and attention scores (ILD)",
        check=_check_tinybert,
        seed_offsets=(0, 1),  # ILD uses the run's seed, PLD seed + 1
    ),
    "distilbert": Method(
        name="distilbert",
        needs_primary=True,
        params={
            **KD_PARAMS,
            "cos_weight": Param(1.0, 0.0, 100.0, "weight of the cosine loss on the last hidden states"),
            "layers": Param(
                None,
                0,
                1000,
                "primary teacher layers the student starts from when "
                "student.pretrained is not set; default Sanh et al.'s [0, 2, 4, 7, 9, 11] for "
                "12-layer teachers, every other layer otherwise",
                kind="indices",
            ),
        },
        run=_run_distilbert,
        doc="DistilBERT task distillation: student = student.pretrained (the paper: distilbert-base-uncased) or "
        "the primary teacher's `layers`; CE + KD (k-teacher mean) + cosine loss to the primary's last hidden "
        "states",
        convention=KD_CONVENTION + " + cos_weight * mean over tokens (1 - cos(h_S, h_primary)); student init: "
        "student.pretrained, else primary layers (default [0,2,4,7,9,11] if 12, else every other)",
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
METHODS: Table[Method] = Table("bench.methods", Method, BUILTIN_METHODS)  # + installed plugins (bench.core.plugins)
