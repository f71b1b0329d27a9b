"""The teacher-output cache: what k teachers cost a student (issue: performance, item 1).

On the quickstart's task and models (digits; 6 CNN teachers trained first, not timed; MLP
students), timed in this one run, single-threaded like one slot:
  cached   the harness's own job (bench.engines.runners.run_distill): the k teachers' stored logits are
           loaded and averaged once, so a step costs what a one-teacher step costs;
  online   the same KD training, but the k teachers run forward on every batch (what
           multi-teacher distillers without a cache do).
Prints the k=6 / k=1 job wall ratio with the cache (target <= 1.05) and the speed-up of the
cache over online teachers at k=6 (student training seconds). Each figure is the median of
--trials runs.

    .venv/bin/python benchmarks/teacher_cache.py [--trials 5] [--epochs 20] [--device cuda:0]

``--device`` (default cpu) is where teachers, jobs and online teachers run; the last line is the
medians as JSON (read by benchmarks/gpu_check.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20, help="student epochs")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N (default: cpu)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        folder = Path(tmp)
        text = (REPO / "sweeps" / "quickstart.toml").read_text()
        text = re.sub(r"(?ms)(\[student\].*?^epochs = )\d+", rf"\g<1>{args.epochs}", text)
        spec_path = folder / "quickstart.toml"
        spec_path.write_text(text)
        subprocess.run(
            [sys.executable, "-m", "bench.cli", "run", str(spec_path), "--teachers-only", "--quiet", "--no-report"]
            + ["--devices", args.device, "--jobs-per-device", "1"] * (args.device != "cpu"),
            cwd=folder,
            check=True,
            capture_output=True,
        )
        import os

        os.chdir(folder)
        from bench.core.config import train_spec
        from bench.driver.run import distill_payload
        from bench.engines import runners as jobs
        from bench.models.builders import MODELS
        from bench.models.losses import kd_loss
        from bench.plan.jobs import make_plan
        from bench.spec.load import load_sweep
        from bench.training.loop import set_seed, train
        from bench.training.teachers import load_teacher_model

        plan = make_plan(load_sweep(spec_path))
        cpu = torch.device(args.device)
        picks = {k: next(j for j in plan.jobs if j.k == k and j.repeat == 0) for k in (1, 6)}
        cached: dict[int, list] = {1: [], 6: []}
        for trial in range(args.trials + 1):  # the first round warms the caches and is dropped
            for k, job in picks.items():
                payload = dataclasses.replace(
                    distill_payload(plan, job).dispatched(1, "bench", args.device, 0.0),
                    record_path=str(folder / f"r{k}.json"),
                )
                rec = jobs.run_distill(payload, cpu)
                if trial:
                    cached[k].append(rec["timings"])
        data = jobs.load_task(picks[6].config, ".cache/bench")
        teachers = [load_teacher_model("teachers", data.name, key, data.shape, cpu) for key in picks[6].teacher_keys]
        job = picks[6]
        spec = train_spec(job.config["student"], job.config["seed"])
        t, alpha = job.config["method"]["params"]["temperature"], job.config["method"]["params"]["alpha"]

        def online(k: int) -> float:
            set_seed(job.config["seed"])
            model = MODELS[spec.model].build(spec, data.shape)

            def loss(model, batch, idx, labels):
                with torch.no_grad():
                    target = torch.stack([m(**batch) for m in teachers[:k]]).mean(0)
                return kd_loss(model(**batch), target, labels, t, alpha)

            t0 = time.perf_counter()
            train(model, data.splits["train"], spec, job.config["seed"], loss, cpu)
            return time.perf_counter() - t0

        online_s = {k: statistics.median(online(k) for _ in range(args.trials)) for k in (1, 6)}
    med = {
        k: {s: statistics.median(t[s] for t in cached[k]) for s in ("setup", "train", "eval", "total")} for k in cached
    }
    print(
        f"digits, 6 CNN teachers, MLP student, {args.epochs} epochs, 1 thread, {args.device}, median of {args.trials}"
    )
    for k in (1, 6):
        print(
            f"cached k={k}: job {med[k]['total']:.3f} s (setup {med[k]['setup']:.3f}, train {med[k]['train']:.3f}, "
            f"eval {med[k]['eval']:.3f}); online k={k}: train {online_s[k]:.3f} s"
        )
    print(f"k=6 / k=1 job wall with the cache: {med[6]['total'] / med[1]['total']:.3f} (target <= 1.05)")
    print(
        f"online k=6 / cached k=6 student training: {online_s[6] / med[6]['train']:.2f}x "
        f"(online k=1 / cached k=1: {online_s[1] / med[1]['train']:.2f}x)"
    )
    print(json.dumps({"device": args.device, "cached": med, "online_train": online_s}))


if __name__ == "__main__":
    main()
