"""The typed configuration of a sweep: frozen dataclasses that every stage shares (built and validated
by bench.spec.load), and the small helpers that read them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from bench.core.energy import PowerModel


@dataclass(frozen=True)
class TaskSpec:
    """Which data set, where it comes from and how text is tokenized."""

    name: str
    data: str | None = None  # local folder (GLUE, CIFAR-10) or text file (lm); None: embedded or the HF hub
    tokenizer: str | None = None  # text tasks: hub name, local folder or alias; default: teacher's
    max_length: int = 128
    train_subset: int | None = None  # use a fixed random subset of the training split
    eval_subset: int | None = None  # ... and of each evaluation split
    split_seed: int = 0  # fixes subsets, the digits train/dev/test split and the training views
    views: int = 0  # cifar10: crop/flip views per training image (0: none, 162: all; bench/tasks/cifar.py)
    vocab_size: int = 1024  # lm: size of the BPE vocabulary trained on the corpus (tokenizer = "bpe")
    teacher_topk: int = 64  # lm: next-token logits kept per position in the teacher cache; 0: all (bench/tasks/lm.py)
    lambada: str | None = None  # lm: LAMBADA jsonl (OpenAI format) for last-word accuracy / perplexity


@dataclass(frozen=True)
class TrainSpec:
    """A model and how to train it (teacher or student)."""

    model: str
    pretrained: str | None = None  # text models: hub name, local folder or alias
    params: dict = field(default_factory=dict)  # builder arguments / config overrides
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping
    optimizer: str = "adamw"  # or "sgd" (with momentum; weight_decay is then the L2 term)
    momentum: float = 0.9  # sgd only
    schedule: str = "linear"  # linear warmup then linear decay; "step": lr x 0.1 at each milestone
    milestones: tuple[float, ...] = (0.5, 0.75)  # "step": fractions of the training steps
    freeze_embeddings: bool = False
    seed: int = 0  # base seed: teacher i uses seed + i, repeat j of a student uses seed + j


@dataclass(frozen=True)
class AugmentSpec:
    """TinyBERT data augmentation of the students' training set (text tasks; off when factor = 0)."""

    factor: int = 0  # new examples per original
    p: float = 0.4  # probability of replacing each word
    candidates: int = 15  # candidates per word (M)
    model: str = "all-minilm-l6-v2"  # masked LM / embedding space: alias, folder or hub name
    per_repeat: bool = True  # repeat j distils on augmentation run j (else one set for all repeats)


@dataclass(frozen=True)
class MethodSpec:
    """The distillation method and its parameters (defaults filled in)."""

    name: str
    params: dict


@dataclass(frozen=True)
class SlurmSpec:
    """Dask workers as Slurm jobs (engine "slurm", dask-jobqueue's SLURMCluster; docs/cluster.md)."""

    host: str = ""  # address the scheduler listens on, reachable from the compute nodes (required)
    interface: str = ""  # or a network interface for the workers (e.g. "ib0")
    partition: str = ""
    account: str = ""
    walltime: str = "24:00:00"
    cores: int = 4  # CPU cores per worker job
    memory: str = "32GB"  # memory per worker job
    gpus: int = 1  # GPUs per worker job: 1 (--gres=gpu:1, worker resource GPU=1) or 0 (CPU workers)
    max_workers: int = 4  # the cluster adapts between 1 and this many worker jobs
    lifetime: str = ""  # e.g. "23h": workers retire before the walltime kills them mid-job
    lifetime_stagger: str = "10m"
    job_directives: tuple[str, ...] = ()  # extra #SBATCH lines, e.g. "--constraint=a100"
    prologue: tuple[str, ...] = ()  # shell lines run before the worker (module load, source venv)
    python: str = ""  # python on the compute nodes; default: this interpreter
    log_directory: str = ""  # Slurm output files; default: results/<sweep>/logs/slurm


@dataclass(frozen=True)
class RunSpec:
    """Where and how jobs run."""

    devices: tuple[str, ...] = ("cpu",)
    jobs_per_device: int = 1  # slots per device: 2 runs two jobs side by side on one GPU
    threads_per_job: int = 0  # 0: cores divided by the number of slots
    retries: int = 1  # extra attempts of a failed job within one run
    timeout: float = 0.0  # seconds per job attempt, 0: none
    max_jobs_per_worker: int = 0  # recycle a worker process after this many jobs, 0: never
    retry_on: tuple[str, ...] = ("error", "crash", "timeout", "oom")  # failure kinds retried (docs/reliability.md)
    engine: str = "local"  # local | dask | slurm (bench/engines/dispatch.py)
    scheduler: str = ""  # dask: a scheduler address or scheduler file; "": a local cluster on loopback
    gpus_per_job: float | None = None  # dask/slurm: GPU share per job; default 1/jobs_per_device on GPUs, else 0
    worker_wait: float = 60.0  # dask/slurm: seconds to wait for a first worker, 0: forever
    dashboard: str = ""  # dask local cluster: dashboard address ("8787" binds 127.0.0.1:8787); "": none
    slurm: SlurmSpec = SlurmSpec()
    deterministic: bool = False  # torch deterministic algorithms (+ cuBLAS workspace): GPU reruns match bit for bit
    precision: str = "fp32"  # fp32 | bf16 | fp16: forward passes under torch autocast (in job keys unless fp32)
    save_students: str = "none"  # none | best (per k, kept at the end of bench run) | all: results/<sweep>/students/
    stack: int | str = 1  # students (and image teachers) trained as one batched model (training/stack.py), or "auto"
    energy: PowerModel = PowerModel()  # [run.energy]: the estimate's figures, PUE, carbon intensity (core.energy)

    def gpu_share(self) -> float:
        """The GPU share one job requests from a Dask cluster (0: a CPU job)."""
        if self.gpus_per_job is not None:
            return self.gpus_per_job
        if self.engine == "slurm":
            return self.slurm.gpus / self.jobs_per_device
        return 0.0 if all(d == "cpu" for d in self.devices) else 1.0 / self.jobs_per_device

    def slots(self) -> int:
        """The local engine's slots (worker processes): devices x jobs_per_device."""
        return len(self.devices) * self.jobs_per_device

    def slots_per_device(self) -> int:
        """How many jobs share one device: the energy of a GPU's counter is split between them."""
        share = self.gpu_share()
        return max(1, round(1 / share)) if share > 0 else self.jobs_per_device

    def slurm_jobs_at_once(self) -> int:
        """How many jobs one Slurm worker job runs side by side: one per core for CPU jobs, else as
        many as its GPUs hold at ``gpu_share()`` each (never more than its cores)."""
        share, cores = self.gpu_share(), self.slurm.cores
        return cores if share <= 0 else max(1, min(cores, int(self.slurm.gpus / share + 1e-9)))


STACK_AUTO_CAP = 64  # run.stack = "auto": at most this many students per stack (the worker may train fewer at once)


@dataclass(frozen=True)
class PathsSpec:
    """Output roots and the project root they, and every relative path of the spec, resolve from
    (``project_root``); ``bench.spec.load`` makes the output roots absolute."""

    teachers: str = "teachers"
    results: str = "results"
    reports: str = "reports"
    cache: str = ".cache/bench"
    root: str = ""  # "": found from the spec's folder (project_root); relative: from the spec's folder


ROOT_MARKERS = ("bench.toml", "pyproject.toml", ".git")  # what makes a folder a project root


def project_root(spec_file: str | os.PathLike) -> Path:
    """Where a spec's relative paths resolve from: the nearest folder, from the spec's own folder
    up, holding ``bench.toml``, ``pyproject.toml`` or ``.git``; else the spec's own folder. One
    stated place, never the current directory, so a command gives the same sweep from any folder
    (the shipped specs in sweeps/ resolve from the repository, as they always did)."""
    folder = Path(os.path.abspath(spec_file)).parent
    for candidate in (folder, *folder.parents):
        if any((candidate / marker).exists() for marker in ROOT_MARKERS):
            return candidate
    return folder


def locate(path: str, root: str | os.PathLike) -> str:
    """A file or folder named in a spec as the run finds it: a relative path that exists under
    ``root`` becomes absolute; anything else (hub names, aliases, absolute paths, a missing file)
    is returned as written. Keys keep the written value; only file access uses this one."""
    if not path or os.path.isabs(path) or path.startswith(("~", "hub:")):
        return path
    found = os.path.join(root, path)
    return os.path.normpath(found) if os.path.exists(found) else path


DESIGN_KINDS = ("full", "adaptive")
DESIGN_STATISTICS = ("worst_m", "best_m", "mean")  # bench.analysis.stats.STATISTICS


@dataclass(frozen=True)
class DesignSpec:
    """Which of the plan's student jobs run, and in what order ([design]; docs/statistics.md section 9).

    ``full`` runs every job. ``adaptive`` runs the same jobs (same keys) in ``looks`` balanced
    batches (bench.plan.design) and stops after a batch once the sequential interval of the
    contrast of k = ``k`` against k = 1 excludes 0 (``error`` held over every planned look), or
    its half-width is at most ``tolerance``, or the next batch would pass ``budget`` (a fraction of
    the full plan's student jobs). Never part of a job key: only order and count change."""

    kind: str = "full"
    k: int = 0  # the k compared with k = 1; 0: the largest k of the sweep
    statistic: str = "worst_m"  # worst_m | best_m | mean (size-matched, bench.analysis.stats)
    error: float = 0.05  # the error rate held over all planned looks together
    tolerance: float = 0.0  # stop when the interval's half-width is at most this (score units); 0: never
    budget: float = 1.0  # at most this fraction of the full plan's student jobs
    looks: int = 6  # planned looks: batch j brings every k to about j/looks of its cells
    seed: int = 0  # the order of the cells (ties of the balanced order)


CONTRAST_KINDS = ("trend", "pooled", "last")  # the headline contrasts of bench.analysis.robustness
HYPOTHESIS_NAMES = (
    "fail",
    "worst",
    "mean",
    "best",
)  # [report] order: the verdict's family (analysis.robustness.HYPOTHESES)


@dataclass(frozen=True)
class ReportSpec:
    """What the report's verdict reads ([report]; docs/statistics.md section 3), fixed in the spec
    before any result exists. ``contrast``: the headline contrast of k teachers against one,
    ``trend`` (every k, along 1 - 1/k, read at the largest k), ``pooled`` (every k != 1 pooled)
    or ``last`` (the largest k alone). A run is a failed run when its predictions are one class,
    when its score is past ``failure_threshold`` on the bad side (None: no threshold), or when it
    is more than ``failure_mad`` robust standard deviations below the median (0: off). ``order``
    and ``weights``: the verdict's multiple-testing graph (``bench.analysis.robustness.Multiplicity``):
    each hypothesis of ``order`` (fail, worst, mean, best) starts with its share of the error and
    passes it on to the next when rejected. Never part of a key: only the report changes."""

    contrast: str = "trend"
    failure_threshold: float | None = None
    failure_mad: float = 5.0
    order: tuple[str, ...] = ("fail", "worst", "mean", "best")
    weights: tuple[float, ...] = (0.9, 0.1, 0.0, 0.0)


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: everything the planner and the runners need."""

    name: str
    task: TaskSpec
    teacher: TrainSpec
    student: TrainSpec
    method: MethodSpec
    teachers: int
    k: tuple[int, ...]
    repeats: int
    grid: dict  # axis name -> tuple of values (method parameters)
    run: RunSpec
    paths: PathsSpec
    augment: AugmentSpec = AugmentSpec()
    source: str = ""
    design: DesignSpec = DesignSpec()
    report: ReportSpec = ReportSpec()

    @property
    def root(self) -> str:
        """The project root (``paths.root``, absolute once loaded; "" for a Sweep built by hand)."""
        return self.paths.root

    def locate(self, path: str) -> str:
        """``path`` (a spec's data, tokenizer or weights) as found from the project root (``locate``)."""
        return locate(path, self.root) if self.root else path

    def results_dir(self) -> Path:
        return Path(self.paths.results) / self.name

    def reports_dir(self) -> Path:
        return Path(self.paths.reports) / self.name


PRECISIONS = ("fp32", "bf16", "fp16")  # run.precision; bf16/fp16 run forward passes under torch autocast


def job_precision(config: dict) -> str:
    """The precision a job runs at, from its config: keys leave ``precision`` out at the default
    (bench.core.keys), so a config without it (every job made before it existed) means fp32."""
    return str(config.get("precision", RunSpec.precision))


def parse_device(name: str) -> tuple[str, int | None]:
    """'cpu' -> ('cpu', None); 'cuda:N' -> ('cuda', N); anything else raises ValueError."""
    if name == "cpu":
        return ("cpu", None)
    if name.startswith("cuda:") and name[5:].isdigit():
        return ("cuda", int(name[5:]))
    raise ValueError(f"expected 'cpu' or 'cuda:N' (N a GPU index), got {name!r}")


def task_spec(config: dict) -> TaskSpec:
    return TaskSpec(**config["task"])


def train_spec(model: dict, seed: int) -> TrainSpec:
    names = {f.name for f in fields(TrainSpec)}
    return TrainSpec(**{k: v for k, v in model.items() if k in names}, seed=seed)
