"""What a key is made of: the identity of a spec section or of a method's parameters, hashed by
the one recipe of bench (``bench.core.hashing.stable_hash``) into job, teacher and cache keys.

The rule that keeps keys from drifting, with no list to keep by hand: the fields and method
parameters that existed when keys were first made (``ORIGINAL_FIELDS``, ``ORIGINAL_PARAMS``: a
snapshot, never edited) are always part of an identity; any added since is part of it only when
set to another value than its default. So a new field with a default leaves every stored key as it
was (a sweep that does not use it is not re-run), and one set to a new value makes new keys.
A method that is not in the snapshot (a plugin) has every parameter in its identity. ``RunSpec``
is in it with no field (no [run] field was in a key then: [run] says where and how jobs run); a
[run] field that changes what a job computes (``precision``) enters by the same rule.

What could still re-key silently is changing the default of a field added since (its old default
would then be read as the new one): ``later_defaults`` lists them, and tests/test_keys.py pins
them with the keys of every shipped spec, so such a change fails loudly and must be deliberate.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, fields
from typing import Any

ORIGINAL_FIELDS: dict[str, tuple[str, ...]] = {
    "TaskSpec": ("name", "data", "tokenizer", "max_length", "train_subset", "eval_subset", "split_seed"),
    "TrainSpec": (
        "model",
        "pretrained",
        "params",
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "warmup_ratio",
        "max_grad_norm",
        "freeze_embeddings",
        "seed",
    ),
    "AugmentSpec": ("factor", "p", "candidates", "model", "per_repeat"),
    "RunSpec": (),  # no [run] field was in a key then; those that change results since enter by the rule
}
ORIGINAL_PARAMS: dict[str, tuple[str, ...]] = {
    "kd": ("temperature", "alpha"),
    "kd-primary": ("temperature", "alpha", "beta"),
    "tinybert": ("temperature", "ild_epochs"),
    "distilbert": ("temperature", "alpha", "cos_weight"),
    "lm-kd": ("temperature", "alpha"),
}


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def identity(spec: Any, drop: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> dict:
    """The fields of a spec dataclass that enter its keys (the rule above), less ``drop``; with
    ``only``, just those fields (the [run] fields that change what a job computes)."""
    original = ORIGINAL_FIELDS.get(type(spec).__name__)
    values = asdict(spec)
    out = {}
    for f in fields(spec):
        if f.name in drop or (only is not None and f.name not in only):
            continue
        if original is None or f.name in original or values[f.name] != _default(f):
            out[f.name] = values[f.name]
    return out


def params_identity(method: Any, params: dict) -> dict:
    """The parameters of ``method`` (a ``methods.table.Method``) that enter a job's key."""
    original = ORIGINAL_PARAMS.get(method.name)
    if original is None:
        return dict(params)
    return {k: v for k, v in params.items() if k in original or v != method.params[k].default}


def later_defaults(*classes: type) -> dict[str, dict[str, Any]]:
    """The defaults of every field added after the snapshot, by class: what keys take them to mean."""
    return {
        c.__name__: {f.name: _default(f) for f in fields(c) if f.name not in ORIGINAL_FIELDS.get(c.__name__, ())}
        for c in classes
    }
