"""Teachers: fine-tune one seed-varied teacher, store it, and serve its cached outputs.

Layout: ``<teachers root>/<task>/<teacher key>/`` holding ``model.safetensors`` (the bench
module's state dict, what bench loads), ``outputs.npz`` (logits on every split, in split order),
for the transformers families (bert, gpt) ``hf/`` (a folder ``from_pretrained`` loads, with the
task's tokenizer and a model card: ``bench.training.export``; teachers stored before it have
none), and ``meta.json`` (seed, scores, timings, device, sizes and sha256 sums of every other
file), the last written last. The folder is built under a temporary name and renamed into place,
so a teacher exists completely or not at all.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from bench.core.cache import save_arrays
from bench.core.config import job_precision, task_spec, train_spec
from bench.core.contracts import JobPayload
from bench.core.energy import Span, begin, combine
from bench.core.files import atomic_write_json, file_mode, read_json
from bench.core.numerics import NUMERICS_VERSION
from bench.core.provenance import provenance
from bench.core.records import teacher_meta_problem
from bench.models.builders import MODELS, count_parameters
from bench.tasks.glue import text_split
from bench.tasks.table import TASKS
from bench.training.export import HF_FOLDER, model_card, save_hf, wrapped_hf


def teacher_dir(root: str | os.PathLike, task: str, key: str) -> Path:
    return Path(root) / task / key


def teacher_done(root: str | os.PathLike, task: str, key: str) -> bool:
    """Whether a complete teacher is stored."""
    return (teacher_dir(root, task, key) / "meta.json").is_file()


TEACHER_FILES = ("model.safetensors", "outputs.npz")  # every teacher has them; meta.json's "files" may list more (hf/)


def file_digest(path: Path) -> dict:
    """Size and sha256 of a file, as stored in a teacher's meta.json."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def teacher_files(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file of a teacher being stored (``model.safetensors``,
    ``outputs.npz``, the files of ``hf/``), by path relative to its folder."""
    names = [*TEACHER_FILES, *sorted(p.relative_to(folder).as_posix() for p in (folder / HF_FOLDER).rglob("*"))]
    return {name: file_digest(folder / name) for name in names if (folder / name).is_file()}


def check_teacher(root: str | os.PathLike, task: str, key: str) -> str | None:
    """What is wrong with a stored teacher (unreadable meta.json, a missing, truncated or
    altered file against the sizes and sha256 sums in its meta.json: ``TEACHER_FILES`` and every
    other file it lists, such as ``hf/``'s), or None when it is sound."""
    folder = teacher_dir(root, task, key)
    try:
        meta = read_json(folder / "meta.json")
    except (OSError, ValueError) as e:
        return f"meta.json unreadable ({e})"
    problem = teacher_meta_problem(meta, key)
    if problem is not None:
        return problem
    listed = meta.get("files", {})
    for name in [*TEACHER_FILES, *(n for n in listed if n not in TEACHER_FILES)]:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"meta.json lists a file outside the teacher's folder ({name})"
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        want = listed.get(name)
        if want is not None and file_digest(path) != want:
            return f"{name} truncated or altered (size or sha256 differs from meta.json)"
    return None


def quarantine_teacher(root: str | os.PathLike, task: str, key: str, reason: str) -> Path:
    """Move a damaged teacher aside (``<root>/<task>/.quarantine/``) so it is trained again; returns
    where it went."""
    folder = teacher_dir(root, task, key)
    dest = Path(root) / task / ".quarantine" / f"{key}-{int(time.time())}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(folder, dest)
    (dest / "QUARANTINED.txt").write_text(f"{reason}\n")
    return dest


def teacher_loss(logits, labels):
    """A teacher's training loss: cross-entropy on the labels (per token for the LM), the same
    alone and in a stack (``training.stack.StackLoss``)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.flatten(0, -2), labels.flatten())


def train_teacher(job: JobPayload, data, device, started: float, span: Span, worker_startup: float = 0.0) -> dict:
    """Fine-tune the teacher of ``job``, cache its logits on every split, store it; returns its meta
    (timings from ``started`` and energy from ``span``, both begun before the data was loaded).
    ``worker_startup`` (the worker's one-off seconds before this job) is recorded outside ``total``."""
    from bench.training.loop import (  # lazy: torch only in the worker that trains, not in the driver
        logits_loss,
        precision_scope,
        train,
    )

    wall_start = time.time() - (time.perf_counter() - started)
    model, spec = build_teacher(job, data)
    t_setup = time.perf_counter()
    with precision_scope(job_precision(job.config), device):
        fit = train(
            model, data.splits["train"], spec, spec.seed, logits_loss(lambda lg, idx, y: teacher_loss(lg, y)), device
        )
    timings = {"setup": t_setup - started, "train": time.perf_counter() - t_setup}
    return store_teacher(job, data, model, fit["steps"], timings, device, wall_start, span, worker_startup)


def build_teacher(job: JobPayload, data):
    """The teacher of ``job`` freshly built after its own ``set_seed``, and its training spec."""
    from bench.training.loop import set_seed  # lazy: torch only in the worker that trains

    spec = train_spec(job.config["model"], job.config["seed"])
    set_seed(spec.seed)
    return MODELS[spec.model].build(spec, data.shape), spec


def store_teacher(
    job: JobPayload,
    data,
    model,
    steps: int,
    timings: dict,
    device,
    wall_start: float,
    span: Span,
    worker_startup: float = 0.0,
    before: dict | None = None,
    **extra,
) -> dict:
    """Evaluate a trained teacher, cache its logits on every split and store it (files, sha256 sums,
    ``meta.json`` last, the folder renamed into place); returns its meta. ``timings`` holds its
    setup and train seconds (eval, cache and total are added: total runs to the end of storing);
    its energy is ``span``'s from the end of training, plus ``before`` (setup and training,
    ``energy.combine``) when given, else ``span``'s alone (begun before setup). ``extra``: more
    meta fields (a stacked teacher's ``stack``)."""
    import torch
    from safetensors.torch import save_model

    from bench.training.loop import (  # lazy: torch only in the worker that trains, not in the driver
        evaluate,
        precision_scope,
        predict_logits,
    )

    config = job.config
    precision = job_precision(config)
    t_train = time.perf_counter()
    with precision_scope(precision, device):  # the cached logits are float32 whatever the precision
        scores = evaluate(data, model, device)
        t_eval = time.perf_counter()
        hook = TASKS[data.name].teacher_outputs
        outputs = (
            hook(model, data, device, task_spec(config))
            if hook is not None
            else {name: predict_logits(model, split, device) for name, split in data.splits.items()}
        )
    t_cache = time.perf_counter()

    def total() -> float:
        return timings["setup"] + timings["train"] + time.perf_counter() - t_train

    metric = TASKS[data.name].metrics[0]
    final = teacher_dir(job.paths.teachers, data.name, job.key)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model.cpu(), str(tmp / "model.safetensors"))
    os.chmod(tmp / "model.safetensors", file_mode())  # safetensors creates it 0600, whatever the umask
    with open(tmp / "outputs.npz", "wb") as f:
        np.savez(f, **outputs)
        f.flush()
        os.fsync(f.fileno())
    meta = {
        "key": job.key,
        "index": job.plan["index"],
        "seed": config["seed"],
        "config": config,
        "files": {},  # below, once hf/ is written
        "status": "ok",
        "scores": scores,
        "metric": metric,
        "score": scores[data.eval_splits[0]][metric],
        "n_params": count_parameters(model),
        "steps": steps,
        "timings": {
            "queue_wait": job.queue_wait,
            **timings,
            "eval": t_eval - t_train,
            "cache": t_cache - t_eval,
            "total": total(),
            "worker_startup": worker_startup,  # one-off, paid before this job's clock: never in total
        },
        "device": job.device,
        "slot": job.slot,
        "attempt": job.attempt,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "precision": precision,
        "numerics": NUMERICS_VERSION,
        "threads": torch.get_num_threads(),
        **(
            {
                "cache_fidelity": [
                    dict(zip(("temperature", "grad_cosine", "loss_ratio"), map(float, row)))
                    for row in outputs["fidelity"]
                ]
            }
            if "fidelity" in outputs
            else {}
        ),
        **extra,
        "provenance": {**provenance(), "started": wall_start, "finished": time.time()},
    }
    if wrapped_hf(model) is not None:
        facts = {
            "task": data.name,
            "trained by sweep": job.plan["sweep"],
            "teacher index": meta["index"],
            "seed": config["seed"],
            "teacher key": job.key,
            "training seconds": f"{meta['timings']['train']:.1f}",
        }
        save_hf(model, data.tokenizer, tmp / HF_FOLDER, model_card(f"bench teacher {job.key}", facts, scores, model.hf))
        meta["timings"]["total"] = total()
        meta["provenance"]["finished"] = time.time()
    meta["energy"] = span.end() if before is None else combine([(before, 1.0), (span.end(), 1.0)])  # as timings.total
    meta["files"] = teacher_files(tmp)
    atomic_write_json(tmp / "meta.json", meta)
    try:
        os.rename(tmp, final)
    except OSError:  # another run stored the same teacher first: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def train_teachers_stacked(built: list, data, device, wall_start: float, worker_startup: float = 0.0) -> dict:
    """Train teachers of one architecture together as one batched model
    (``training.stack.train_stacked``, each with its own seed, initialisation and data order, the
    loss ``teacher_loss``), then store each as ``train_teacher`` does: the same files, sha256 sums
    and meta fields, plus ``stack`` (size, index, the stack's training seconds). ``built``: per
    teacher (job, model built by ``build_teacher``, spec, setup seconds, setup energy). Returns
    ``{key: meta | exception}``: a teacher that diverged (``Diverged`` at its first non-finite
    loss) or whose storing raised fails alone. The worker's one-off ``worker_startup`` goes to the
    first teacher's meta; each is charged its own setup, evaluation and storing and an equal share
    of the stack's training, in seconds and in energy."""
    from bench.training.loop import Diverged  # lazy: torch only in the worker that trains
    from bench.training.stack import StackLoss, train_stacked  # lazy: torch.func, workers only

    jobs, models, specs, setup, setup_energy = zip(*built)
    train_span = begin(jobs[0].energy, device)
    fits = train_stacked(
        list(models),
        data.splits["train"],
        specs[0],
        [s.seed for s in specs],
        [StackLoss((), teacher_loss)] * len(built),
        device,
    )
    train_seconds = sum(f["seconds"] for f in fits)
    train_energy = train_span.end()
    out: dict = {}
    for i, (job, model, fit) in enumerate(zip(jobs, models, fits)):
        if fit["diverged_at"] is not None:
            out[job.key] = Diverged(fit["diverged_at"])
            continue
        try:
            out[job.key] = store_teacher(
                job,
                data,
                model,
                fit["steps"],
                {"setup": setup[i], "train": fit["seconds"]},
                device,
                wall_start,
                begin(job.energy, device),
                worker_startup if i == 0 else 0.0,
                before=combine([(setup_energy[i], 1.0), (train_energy, 1.0 / len(built))]),
                stack={"size": len(built), "index": i, "train_seconds": train_seconds},
            )
        except Exception as e:
            out[job.key] = e
    return out


def load_teacher_model(root: str | os.PathLike, task: str, key: str, shape, device):
    """A stored teacher as a torch module in eval mode (weights from safetensors)."""
    from safetensors.torch import load_model

    meta = load_meta(root, task, key)
    spec = train_spec(meta["config"]["model"], meta["seed"])
    model = MODELS[spec.model].build(spec, shape)
    load_model(model, str(teacher_dir(root, task, key) / "model.safetensors"))
    return model.to(device).eval()


def augmented_outputs_path(root: str | os.PathLike, task: str, teacher_key: str, augment_key: str) -> Path:
    """Where a teacher's logits on an augmented training set are cached."""
    return teacher_dir(root, task, teacher_key) / f"aug-{augment_key}.npz"


def run_teacher_outputs(job: JobPayload, data, device) -> dict:
    """Worker job: a stored teacher's logits on one augmented set, computed once and cached."""
    import time

    from bench.training.augment import (  # lazy: torch only in the worker that trains, not in the driver
        augmented_path,
        load_augmented,
    )
    from bench.training.loop import (  # lazy: torch only in the worker that trains, not in the driver
        precision_scope,
        predict_logits,
    )

    start = time.perf_counter()
    config = job.config
    split = text_split(load_augmented(augmented_path(job.paths.cache, data.name, config["augment"])))
    model = load_teacher_model(job.paths.teachers, data.name, config["teacher"], data.shape, device)
    with precision_scope(job_precision(config), device):  # as the teacher's own cached logits
        logits = predict_logits(model, split, device)
    save_arrays(
        augmented_outputs_path(job.paths.teachers, data.name, config["teacher"], config["augment"]),
        {"train": logits},
    )
    return {"examples": len(split), "seconds": time.perf_counter() - start}


def load_outputs(root: str | os.PathLike, task: str, key: str) -> dict[str, np.ndarray]:
    """A stored teacher's logits by split."""
    path = teacher_dir(root, task, key) / "outputs.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"{path}: cannot read the teacher's cached outputs ({e}); delete {path.parent} to train this teacher again"
        ) from None


def load_meta(root: str | os.PathLike, task: str, key: str) -> dict:
    """A stored teacher's metadata (seed, scores, timings)."""
    return read_json(teacher_dir(root, task, key) / "meta.json")
