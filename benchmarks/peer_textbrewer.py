"""A peer: the same distillation job run by TextBrewer and by bench, interleaved (issues 20 and 29).

The job: SST-2 (from ``../shared/data/glue``: 512 training sentences, 256 dev sentences, 64
tokens at most), 6 teachers fine-tuned from the offline MiniLM (alias ``all-minilm-l6-v2``, 6
layers, width 384; one epoch, trained once by ``bench run --teachers-only`` and kept in the work
folder), a 2-layer BERT student (width 128, random init), KD at T = 2, alpha = 0.5, batch 32 (16
steps an epoch) for 1 and for 3 epochs (``--epochs``), AdamW, linear decay, clipping at 1.0, 1
torch thread on both sides.

  ours       bench's own job function (``bench.engines.runners.run_distill``, in this process, as
             a worker runs it): load the k teachers' cached logits, average them, train, evaluate
             on dev; its record's ``timings.total``.
  TB default ``benchmarks/peer/textbrewer_job.py`` in TextBrewer's virtual environment: load the k
             teachers' transformers folders (bench's ``hf/``), build the same student, train it
             with ``MultiTeacherDistiller`` (k = 6: the 6 teachers run forward on every batch) or
             ``BasicDistiller`` (k = 1), evaluate on dev; timed inside the subprocess (no
             interpreter start-up, no imports). It trains on the very batches bench's job uses
             (same examples, order and padding, made here beforehand: their collation is not
             in its time, it is in ours).
  TB cached  the same with TextBrewer's ``is_caching_logits=True`` (k = 6): the teachers run once
             over the first epoch's batches, which every epoch then reuses in a shuffled order
             (TextBrewer's cache keeps batches with their logits; it cannot follow bench's
             per-epoch reshuffle). Its cache lives inside one job: nothing is kept across jobs.

Each round runs, for every epoch count: ours k=1, ours k=6, TB default k=1, TB default k=6, TB
cached k=6; the first round warms caches and is dropped. Prints per-round ratios and their min /
median / max for each (mode, epochs): TextBrewer k=6 / ours k=6 (target >= 10, the goal is on
TB cached at 3 epochs), ours k=6 / ours k=1 (target <= 1.05) and TB default k=1 / ours k=1.

TextBrewer's environment (once; torch from the local wheel, as the README installs it):

    python3 -m venv /work/textbrewer-venv && /work/textbrewer-venv/bin/pip install torch==2.13.0 \
        && /work/textbrewer-venv/bin/pip install textbrewer transformers

    .venv/bin/python benchmarks/peer_textbrewer.py [--rounds 3] [--epochs 1,3] \
        [--peer-python /work/textbrewer-venv/bin/python]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PEER_JOB = REPO / "benchmarks" / "peer" / "textbrewer_job.py"
DATA = (REPO.parent / "shared" / "data" / "glue").resolve()
STUDENT = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}

SPEC = """name = "{name}"
teachers = {teachers}
repeats = 1

[task]
name = "sst2"
data = "{data}"
tokenizer = "all-minilm-l6-v2"
max_length = 64
train_subset = 512
eval_subset = 256

[teacher]
model = "bert"
pretrained = "all-minilm-l6-v2"
epochs = 1
batch_size = 32
lr = 5e-5
seed = 42

[student]
model = "bert"
params = {student}
epochs = {epochs}
batch_size = 32
lr = 1e-3
seed = 100

[method]
name = "kd"
temperature = 2.0
alpha = 0.5

[run]
devices = ["cpu"]
jobs_per_device = {slots}
threads_per_job = 1
"""


def spec_text(epochs: int, teachers: int = 6, name: str = "peer-textbrewer", slots: int = 1) -> str:
    """The sweep spec whose students train for ``epochs`` epochs (the teachers are the same for
    every count), with ``teachers`` teachers and ``slots`` CPU slots of 1 thread each (also used
    by ``benchmarks/peer_sweep.py``)."""
    student = json.dumps(STUDENT).replace('":', '" =')
    return SPEC.format(name=name, teachers=teachers, data=DATA, student=student, epochs=epochs, slots=slots)


def peer_batches(data, spec, seed: int) -> dict:  # noqa: ANN001 - bench's TaskData and TrainSpec
    """The batches bench's training loop draws for this job (same generator, order, skips and
    padding as ``bench.training.loop.train``), with labels, and its evaluation batches."""
    split = data.splits["train"]
    rng, n, train = np.random.default_rng(seed), len(split), []
    for _ in range(spec.epochs):
        order = rng.permutation(n)
        for b in range(0, n, spec.batch_size):
            idx = order[b : b + spec.batch_size]
            if len(idx) >= 2:
                train.append({**split.batch(idx), "labels": torch.from_numpy(split.labels[idx]).long()})
    dev = data.splits[data.eval_splits[0]]
    evals = [
        {**dev.batch(np.arange(b, min(b + 256, len(dev)))), "labels": torch.from_numpy(dev.labels[b : b + 256]).long()}
        for b in range(0, len(dev), 256)
    ]
    return {"train": train, "dev": evals}


def peer_job(  # noqa: ANN001 - a bench DistillJob, TaskData
    folder: Path, job, data, seed: int, mode: str, teacher_dirs: list[str] | None = None
) -> dict:
    """The JSON the TextBrewer side reads for ``job`` in ``mode`` (default or cached): teachers'
    folders (bench's ``hf/`` folders of the job's teachers unless ``teacher_dirs`` names others),
    student, settings, batches (written to ``folder`` once per seed and epoch count)."""
    from bench.core.config import train_spec  # lazy: bench is importable only once the work folder is set

    spec = train_spec(job.config["student"], seed)
    batches = folder / f"batches-{seed}-e{spec.epochs}.pt"
    if not batches.exists():
        torch.save(peer_batches(data, spec, seed), batches)
    params = job.config["method"]["params"]
    return {
        "teachers": teacher_dirs or [str(folder / "teachers" / "sst2" / key / "hf") for key in job.teacher_keys],
        "student_config": {**STUDENT, "vocab_size": data.shape.vocab_size, "num_labels": data.shape.num_labels},
        "seed": seed,
        "freeze_embeddings": spec.freeze_embeddings,
        "lr": spec.lr,
        "weight_decay": spec.weight_decay,
        "max_grad_norm": spec.max_grad_norm,
        "temperature": params["temperature"],
        "alpha": params["alpha"],
        "threads": 1,
        "epochs": spec.epochs,
        "mode": mode,
        "batches": str(batches),
    }


def theirs(peer_python: str, path: Path) -> dict:
    """Run the TextBrewer job described by ``path`` in its environment; its timings."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [peer_python, str(PEER_JOB), str(path)], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


RUNS = (("ours", 1), ("ours", 6), ("default", 1), ("default", 6), ("cached", 6))
"""One round's jobs per epoch count, in the order they run: (side or TextBrewer mode, k)."""


def summary(name: str, values: list[float], target: str) -> str:
    """One line: the ratio's values, min / median / max, and its target."""
    return (
        f"{name}: median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f}; "
        f"{', '.join(f'{v:.2f}' for v in values)}) target {target}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds (one more runs first as warm-up)")
    ap.add_argument("--epochs", default="1,3", help="the students' epoch counts, comma-separated")
    ap.add_argument("--peer-python", default="/work/textbrewer-venv/bin/python")
    ap.add_argument("--workdir", default="/tmp/bench-peer-textbrewer", help="kept: the teachers are trained once")
    args = ap.parse_args()
    epoch_counts = [int(e) for e in args.epochs.split(",")]
    torch.set_num_threads(1)
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    spec_paths = {e: folder / f"peer-e{e}.toml" for e in epoch_counts}
    for e, path in spec_paths.items():
        path.write_text(spec_text(e))
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.cli", "run", str(spec_paths[epoch_counts[0]]), "--teachers-only"]
    subprocess.run([*cmd, "--quiet", "--no-report"], cwd=folder, check=True)
    print(f"teachers ready in {time.perf_counter() - t0:.0f} s (trained once, then reused)")
    os.chdir(folder)
    from bench.driver.run import distill_payload  # lazy: after chdir, like a worker in its project folder
    from bench.engines import runners
    from bench.plan.jobs import make_plan
    from bench.spec.load import load_sweep

    plans = {e: make_plan(load_sweep(path)) for e, path in spec_paths.items()}
    picks = {
        e: {k: next(j for j in p.jobs if j.k == k and j.primary is None) for k in (1, 6)} for e, p in plans.items()
    }
    data = runners.load_task(picks[epoch_counts[0]][6].config, ".cache/bench")
    peer_paths: dict[tuple[int, str, int], Path] = {}
    for e in epoch_counts:
        for mode, k in RUNS:
            if mode != "ours":
                job = picks[e][k]
                peer_paths[e, mode, k] = folder / f"peer-e{e}-{mode}-k{k}.json"
                peer_paths[e, mode, k].write_text(json.dumps(peer_job(folder, job, data, job.config["seed"], mode)))
    rows: list[dict] = []
    for rnd in range(args.rounds + 1):  # round 0 warms the caches (teacher logits, page cache) and is dropped
        row: dict = {"load": os.getloadavg()[0]}
        for e in epoch_counts:
            for mode, k in RUNS:
                if mode == "ours":
                    payload = distill_payload(plans[e], picks[e][k]).dispatched(1, "bench", "cpu", 0.0)
                    payload = dataclasses.replace(payload, record_path=str(folder / f"r-e{e}-k{k}.json"))
                    rec = runners.run_distill(payload, torch.device("cpu"))
                    row[f"{mode}{k}e{e}"], row[f"{mode}{k}e{e}_acc"] = rec["timings"]["total"], rec["score"]
                else:
                    got = theirs(args.peer_python, peer_paths[e, mode, k])
                    row[f"{mode}{k}e{e}"], row[f"{mode}{k}e{e}_acc"] = got["total"], got["accuracy"]
                    row[f"{mode}{k}e{e}_train"] = got["train"]
        if rnd:
            rows.append(row)
            for e in epoch_counts:
                print(
                    f"round {rnd}, {e} epoch(s), load {row['load']:.2f}: "
                    + "; ".join(
                        f"{mode} k={k} {row[f'{mode}{k}e{e}']:.2f} s (acc {row[f'{mode}{k}e{e}_acc']:.3f})"
                        for mode, k in RUNS
                    ),
                    flush=True,
                )
    print(
        f"SST-2 512/256, 6 MiniLM teachers, 2-layer BERT student, 16 steps of 32 an epoch, 1 thread, "
        f"{args.rounds} rounds, load 1 min {os.getloadavg()[0]:.2f}"
    )
    for e in epoch_counts:
        goal = ">= 10 (the goal)" if e == 3 else ">= 10"
        print(summary(f"{e} ep: TB cached k=6 / ours k=6", [r[f"cached6e{e}"] / r[f"ours6e{e}"] for r in rows], goal))
        print(
            summary(f"{e} ep: TB default k=6 / ours k=6", [r[f"default6e{e}"] / r[f"ours6e{e}"] for r in rows], ">= 10")
        )
        print(
            summary(
                f"{e} ep: TB default k=1 / ours k=1", [r[f"default1e{e}"] / r[f"ours1e{e}"] for r in rows], "(none)"
            )
        )
        print(summary(f"{e} ep: ours k=6 / ours k=1", [r[f"ours6e{e}"] / r[f"ours1e{e}"] for r in rows], "<= 1.05"))
        print(
            summary(
                f"{e} ep: TB default k=6 / TB cached k=6",
                [r[f"default6e{e}"] / r[f"cached6e{e}"] for r in rows],
                "(none)",
            )
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
