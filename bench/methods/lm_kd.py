"""Token-level KD for causal LMs (the `lm-kd` recipe), and the fidelity of its cached k-teacher target
measured in each job.
"""

from __future__ import annotations

from typing import Any

from bench.models.builders import MODELS
from bench.models.losses import token_kd_loss
from bench.tasks.lm import cache_fidelity, cache_kind, fidelity_sample, full_logits, kd_target, sample_cache
from bench.training.loop import set_seed, train
from bench.training.teachers import load_teacher_model


def job_cache_fidelity(ctx: Any, students: dict) -> dict:
    """The fidelity of this job's k-teacher cached target at its temperature on the fidelity
    sample, for each of ``students`` (name -> the student's logits there, e.g. as initialised
    and as trained): k teacher forwards on a few blocks."""

    idx = fidelity_sample(ctx.data)
    exact = [
        full_logits(
            load_teacher_model(ctx.teachers_root, ctx.data.name, key, ctx.data.shape, ctx.device),
            ctx.data,
            ctx.device,
            idx,
        )
        for key in ctx.teacher_keys
    ]
    cached = [sample_cache(o, idx) for o in ctx.teacher_outputs]
    out: dict = {
        "temperature": ctx.params["temperature"],
        "positions": len(exact[0]),
        "cache": cache_kind(ctx.teacher_outputs[0]),
    }
    for name, logits in students.items():
        out[name] = cache_fidelity(exact, cached, logits, ctx.params["temperature"])
    out["grad_cosine"] = min(out[name]["grad_cosine"] for name in students)
    return out


def train_lm_kd(ctx: Any) -> Any:
    """Token-level KD of a causal LM: ``alpha*CE + (1-alpha)*T^2*KL`` per token against the mean
    of the k teachers' cached next-token logits (``kd_target``: exact from dense caches, top-K
    union + tail bucket otherwise). When the KD term is used, records how faithful the cached
    target's gradient is for the student as initialised and as trained (``job_cache_fidelity``)."""
    import torch

    set_seed(ctx.seed)
    model = MODELS[ctx.spec.model].build(ctx.spec, ctx.data.shape)
    measure = ctx.params["alpha"] < 1.0  # the KD term is used: how faithful is its cached target?
    sample = fidelity_sample(ctx.data)
    initial = full_logits(model, ctx.data, ctx.device, sample) if measure else None  # eval mode: no RNG used
    model.train()
    ids_np, logits_np, tail_np = kd_target(list(ctx.teacher_outputs))
    ids = None if ids_np is None else torch.from_numpy(ids_np)
    logits = torch.from_numpy(logits_np)
    tail = None if tail_np is None else torch.from_numpy(tail_np)
    t, alpha = ctx.params["temperature"], ctx.params["alpha"]

    def loss(model: Any, batch: dict, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = model(**batch).flatten(0, 1)
        dev = out.device
        support = (
            torch.arange(out.shape[-1], device=dev).expand_as(out)
            if ids is None
            else ids[target].flatten(0, 1).to(dev).long()
        )
        return token_kd_loss(
            out,
            support,
            logits[target].flatten(0, 1).to(dev).float(),
            labels.flatten(),
            torch.ones(out.shape[0], device=dev),
            t,
            alpha,
            tail_logits=None if tail is None else tail[target].flatten().to(dev),
        )

    ctx.fit.update(train(model, ctx.data.splits["train"], ctx.spec, ctx.seed, loss, ctx.device))
    if measure:
        ctx.teacher_work["cache_fidelity"] = job_cache_fidelity(
            ctx, {"init": initial, "final": full_logits(model, ctx.data, ctx.device, sample)}
        )
    return model
