"""How faithful the LM teacher cache is: top-K next-token logits + a tail bucket instead of the
full vocabulary, measured where it matters, on the KD gradient.

For the stored teachers of an LM sweep (default: sweeps/cpu/lm-wikitext.toml; train them first
with `bench run SPEC --teachers-only`), on the first training positions, for each K and T:
  - bytes per position of the cache (K = 0: every logit in float16, what `teacher_topk = 0` keeps);
  - the teacher mass outside the top K (one teacher);
  - ``bench.tasks.lm.cache_fidelity``: the cosine between the gradient (w.r.t. the student logits) of
    the cached KD term T^2 KL and of the exact one, and the ratio cached / exact of that term,
    for k = 1 and k = all teachers, and for two students: "init", the sweep's student model as
    initialised (what each record measures), and "trained", a trained model standing in for a
    student late in training (for k = 1 of teacher 0: teacher 1; for k = all: teacher 0, one of
    the members, so the exact gradient is the pull from one member towards the mean).

    .venv/bin/python benchmarks/lm_topk_cache.py [SPEC] [--positions 4096] [--topk 64 256 1024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.core.config import train_spec
from bench.engines.runners import load_task
from bench.models.builders import MODELS
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep
from bench.tasks.lm import cache_fidelity, full_logits, tail_logit
from bench.training.loop import set_seed
from bench.training.teachers import load_teacher_model

REPO = Path(__file__).resolve().parents[1]


def cache_of(logits: torch.Tensor, k: int) -> dict:
    """What the teacher job would cache with task.teacher_topk = k, from full logits (positions, V)."""
    if k == 0 or k >= logits.shape[-1]:
        return {"logits": logits.half().numpy()}
    top = torch.topk(logits, k, dim=-1)
    return {
        "topk_idx": top.indices.int().numpy(),
        "topk_val": top.values.half().numpy(),
        "tail_logit": tail_logit(logits, top.values).numpy(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default=str(REPO / "sweeps" / "cpu" / "lm-wikitext.toml"))
    ap.add_argument("--positions", type=int, default=4096)
    ap.add_argument("--topk", type=int, nargs="+", default=[64, 256, 1024, 0], help="0: all logits (dense)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=None, help="default: the sweep's grid")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sweep = load_sweep(args.spec)
    plan = make_plan(sweep)
    data = load_task(plan.teachers[0].config, str(Path(sweep.paths.cache).resolve()))
    idx = np.arange(min(-(-args.positions // sweep.task.max_length), len(data.splits["train"])))
    cpu = torch.device("cpu")

    def logits_of(model: torch.nn.Module) -> torch.Tensor:
        import bench.tasks.lm as lm

        lm.FIDELITY_POSITIONS = args.positions
        return full_logits(model, data, cpu, idx)

    teachers = [
        logits_of(load_teacher_model(sweep.paths.teachers, "lm", t.key, data.shape, cpu)) for t in plan.teachers
    ]
    spec = train_spec(plan.jobs[0].config["student"], plan.jobs[0].config["seed"])
    set_seed(spec.seed)
    init = logits_of(MODELS[spec.model].build(spec, data.shape))
    temps = args.temperatures or sorted(set(sweep.grid.get("temperature", (sweep.method.params["temperature"],))))
    n, vocab = teachers[0].shape
    big = len(teachers)
    print(
        f"{len(teachers)} teachers of {sweep.name}, vocabulary {vocab}, {n} training positions; "
        f"full float16 logits: {2 * vocab:,} bytes per position"
    )
    print(
        f"| K | bytes/position | T | tail mass, k=1 | cos k=1 init | cos k=1 trained | cos k={big} init | "
        f"cos k={big} trained | KD ratio k=1 init | KD ratio k={big} init |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in args.topk:
        caches = [cache_of(t, k) for t in teachers]
        for temp in temps:
            p = torch.softmax(teachers[0] / temp, -1)
            tail = (
                0.0
                if "logits" in caches[0]
                else float(1 - p.gather(1, torch.from_numpy(caches[0]["topk_idx"]).long()).sum(-1).mean())
            )
            one_init = cache_fidelity(teachers[:1], caches[:1], init, temp)
            one_trained = cache_fidelity(teachers[:1], caches[:1], teachers[1], temp)
            all_init = cache_fidelity(teachers, caches, init, temp)
            all_trained = cache_fidelity(teachers, caches, teachers[0], temp)
            size = 2 * vocab if "logits" in caches[0] else 6 * k + 4
            print(
                f"| {k or 'all'} | {size:,} | {temp:g} | {tail:.3f} | {one_init['grad_cosine']:.4f} | "
                f"{one_trained['grad_cosine']:.4f} | {all_init['grad_cosine']:.4f} | "
                f"{all_trained['grad_cosine']:.4f} | {one_init['loss_ratio']:.3f} | {all_init['loss_ratio']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
