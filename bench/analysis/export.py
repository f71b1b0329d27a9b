"""``bench export``: a sweep's records in the formats of experiment trackers and analysis tools.

One flat row per record (``flat_row``): identity (job key, sweep, status, k, combination,
primary, repeat, seed, method, teacher keys), the record's config flattened to dotted names
(``config.student.lr``), and its numbers: the headline ``score``, every ``<split>_<metric>`` and
every timing ``t_<stage>`` in seconds, named as in the report's jobs.csv. Failed, diverged and
skipped records are exported with their status and no numbers. Each target (``EXPORTERS``) is one
function writing into its own folder (default ``reports/<sweep>/export/<target>``):

- ``tensorboard``: one run folder per job, ``<out>/<sweep>/<job-key>/``, with the hparams
  summary (params and metrics) and one scalar per metric at step 0;
- ``mlflow``: a file store ``<out>/mlruns``, experiment = the sweep, one run per job named by its
  key: params, metrics and tags (key, sweep, status);
- ``wandb``: offline runs under ``<out>/wandb/`` (``wandb sync`` uploads them), group = the sweep,
  config = the params, summary = the metrics;
- ``rliable``: ``<out>/<sweep>.npz`` and ``.json``, score arrays as rliable takes them:
  algorithm ("k=2", with the grid point when there is a grid) -> runs x tasks (one task, the
  headline score of each ok run);
- ``parquet``: ``<out>/<sweep>.parquet``, the rows as one table.

The libraries are optional (the ``export`` extra) and imported only by their exporter. None of
them may reach the network or write outside ``out``: their environment variables are set for
the export's own call and restored after. ``out`` is owned by the export (a marker file names
it): a second export of the same target replaces what the first wrote, and a folder holding
anything else is refused.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.analysis.options import EXPORT_TARGETS
from bench.analysis.report import planned_records
from bench.core.errors import UserError
from bench.core.files import atomic_write_bytes, atomic_write_json
from bench.plan.jobs import Plan

MARKER = ".bench-export"
INSTALL = 'pip install "bench[export]"'
# target -> (module it imports, the PyPI package that provides it); rliable's arrays need numpy only
NEEDS = {
    "tensorboard": ("torch.utils.tensorboard", "tensorboard"),
    "mlflow": ("mlflow.tracking", "mlflow-skinny"),
    "wandb": ("wandb", "wandb"),
    "parquet": ("pyarrow.parquet", "pyarrow"),
}


@dataclass(frozen=True)
class Row:
    """One record as trackers take it: ``params`` (identity and flattened config: str, number,
    bool), ``metrics`` (floats; empty unless the record is ok) and ``tags`` (key, sweep, status)."""

    key: str
    sweep: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, float]

    @property
    def tags(self) -> dict[str, str]:
        return {"key": self.key, "sweep": self.sweep, "status": self.status}


def _scalar(value: Any) -> Any:
    """A config value as one cell: numbers, strings and booleans as they are, None as None,
    lists and objects as compact JSON (so every row of a column has one type)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def flatten(obj: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Nested objects to dotted names (``{"a": {"b": 1}}`` -> ``{"<prefix>.a.b": 1}``); lists stay one value."""
    out: dict[str, Any] = {}
    for name, value in obj.items():
        dotted = f"{prefix}.{name}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = _scalar(value)
    return out


def flat_row(record: dict) -> Row:
    """The export row of one sound record (``core.records`` schema)."""
    config = record["config"]
    ok = record["status"] == "ok"
    params = {
        "key": record["key"],
        "sweep": record.get("sweep"),
        "status": record["status"],
        "k": record["k"],
        "combination": "-".join(str(i) for i in record["combination"]),
        "primary": record.get("primary"),
        "repeat": record["repeat"],
        "seed": config.get("seed"),
        "method": (config.get("method") or {}).get("name"),
        "teacher_keys": ",".join(record["teacher_keys"]),
        "metric": record.get("metric"),
        "n_params": record.get("n_params"),
        **flatten(config, "config"),
    }
    metrics: dict[str, float] = {}
    if ok:
        metrics["score"] = float(record["score"])
        for split, values in (record.get("scores") or {}).items():
            metrics.update({f"{split}_{m}": float(v) for m, v in values.items()})
        metrics.update({f"t_{t}": float(v) for t, v in (record.get("timings") or {}).items() if v is not None})
        energy = record.get("energy") or {}  # records before energy was measured have none
        metrics.update({f"energy_{u}": float(energy[u]) for u in ("kwh", "co2e_g") if energy.get(u) is not None})
        if energy.get("source"):
            params["energy_source"] = energy["source"]
    return Row(record["key"], str(record.get("sweep")), record["status"], params, metrics)


def sweep_rows(plan: Plan) -> list[Row]:
    """The rows of the sweep's sound, planned records, in the plan's order (k, combination, ...)."""
    order = {j.key: i for i, j in enumerate(plan.jobs)}
    return [flat_row(r) for r in sorted(planned_records(plan), key=lambda r: order[r["key"]])]


def _text(value: Any) -> str:
    """A param value as text (MLflow and TensorBoard's hparams take strings for what is not a number)."""
    return "None" if value is None else str(value)


@contextmanager
def scoped_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block only (libraries read their settings there); every
    one is restored, or removed, afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def check_installed(target: str) -> None:
    """Raise a UserError naming the package and the extra when ``target``'s library cannot be
    imported, before anything is written."""
    if target not in NEEDS:
        return
    module, package = NEEDS[target]
    try:
        importlib.import_module(module)  # lazy: optional dependency, imported only for its target
    except ImportError as e:
        raise UserError(f"bench export --to {target} needs the package {package} ({e}): {INSTALL}") from None


# ---- the targets: one function each, (plan, rows, out) -> None -----------------------------------


def to_tensorboard(plan: Plan, rows: list[Row], out: Path) -> None:
    """One run folder per job, ``<out>/<sweep>/<key>/``: the hparams plugin's summaries (params
    and metric values, so TensorBoard's HParams tab compares jobs) and each metric as a scalar at
    step 0."""
    from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency
    from torch.utils.tensorboard.summary import hparams  # lazy: optional dependency

    for row in rows:
        hp = {n: v if isinstance(v, (int, float, bool)) else _text(v) for n, v in row.params.items()}
        with SummaryWriter(log_dir=str(out / plan.sweep.name / row.key)) as writer:
            for summary in hparams(hp, row.metrics):
                writer.file_writer.add_summary(summary)
            for name, value in row.metrics.items():
                writer.add_scalar(name, value, 0)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def to_mlflow(plan: Plan, rows: list[Row], out: Path) -> None:
    """A file store ``<out>/mlruns`` (read with ``MlflowClient(tracking_uri="file:<out>/mlruns")``
    or ``mlflow ui --backend-store-uri``): experiment = the sweep, one finished run per job named
    by its key. A param longer than MLflow's limit is cut to it, with a warning naming it."""
    from mlflow.entities import Metric, Param  # lazy: optional dependency
    from mlflow.store.tracking.file_store import FileStore  # lazy: optional dependency
    from mlflow.tracking import MlflowClient  # lazy: optional dependency
    from mlflow.utils.validation import (  # lazy: optional dependency
        MAX_METRICS_PER_BATCH,
        MAX_PARAM_VAL_LENGTH,
        MAX_PARAMS_TAGS_PER_BATCH,
    )

    # the file store is in maintenance mode in MLflow 3 but needs no database; no telemetry
    env = {"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with scoped_env(env):
        uri = (out / "mlruns").resolve().as_uri()
        FileStore(uri)  # lays the store out: the client's store, kept per URI per process, only checks it
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment(plan.sweep.name)
        cut: set[str] = set()
        for row in rows:
            run = client.create_run(experiment, run_name=row.key, tags=row.tags)
            params = []
            for name, value in row.params.items():
                text = _text(value)
                if len(text) > MAX_PARAM_VAL_LENGTH:
                    cut.add(name)
                    text = text[:MAX_PARAM_VAL_LENGTH]
                params.append(Param(name, text))
            metrics = [Metric(n, v, 0, 0) for n, v in row.metrics.items()]
            for batch in _batches(params, MAX_PARAMS_TAGS_PER_BATCH):
                client.log_batch(run.info.run_id, params=batch)
            for batch in _batches(metrics, MAX_METRICS_PER_BATCH):
                client.log_batch(run.info.run_id, metrics=batch)
            client.set_terminated(run.info.run_id, "FINISHED" if row.status == "ok" else "FAILED")
    if cut:
        print(
            f"warning: mlflow: params {', '.join(sorted(cut))} longer than {MAX_PARAM_VAL_LENGTH} characters "
            "were cut to it (the parquet export keeps them whole)",
            file=sys.stderr,
        )


def to_wandb(plan: Plan, rows: list[Row], out: Path) -> None:
    """Offline W&B runs under ``<out>/wandb/offline-run-*`` (``wandb sync`` uploads them later):
    project "bench", group = the sweep, name = the job key, config = the params, summary = the
    metrics. W&B's own settings, cache and data folders go to a temporary folder removed after."""
    import wandb  # lazy: optional dependency

    with tempfile.TemporaryDirectory(prefix="bench-wandb-") as home:
        env = {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_DISABLE_GIT": "true",
            "WANDB_DISABLE_CODE": "true",
            "WANDB_CONSOLE": "off",
            "WANDB_DIR": str(out),
            "WANDB_CONFIG_DIR": os.path.join(home, "config"),
            "WANDB_CACHE_DIR": os.path.join(home, "cache"),
            "WANDB_DATA_DIR": os.path.join(home, "data"),
            "WANDB_ARTIFACT_DIR": os.path.join(home, "artifacts"),
        }
        settings = wandb.Settings(
            silent=True,
            console="off",
            disable_git=True,
            disable_code=True,
            x_disable_stats=True,
            x_disable_meta=True,
            x_save_requirements=False,
        )
        with scoped_env(env):
            for row in rows:
                run = wandb.init(
                    mode="offline",
                    dir=str(out),
                    project="bench",
                    group=plan.sweep.name,
                    name=row.key,
                    job_type="distill",
                    tags=[row.status],
                    config=row.params,
                    settings=settings,
                    reinit="create_new",
                )
                run.summary.update(row.metrics)
                run.finish(exit_code=0 if row.status == "ok" else 1)
            wandb.teardown()  # the W&B service process ends before its folders are removed
    # each run linked its logs/debug-core.log to the W&B service's log in the cache, now gone
    for link in (run / "logs" / "debug-core.log" for run in (out / "wandb").glob("offline-run-*")):
        if link.is_symlink() and not link.exists():
            link.unlink()


def score_arrays(plan: Plan, rows: list[Row]) -> dict[str, np.ndarray]:
    """rliable's input: algorithm -> (runs x tasks) headline scores of the ok runs, one task (the
    sweep's). An algorithm is a k ("k=2"), with the grid point after it when the sweep has a grid
    ("k=2,temperature=4.0")."""
    grid = sorted(plan.sweep.grid)
    groups: dict[str, list[float]] = {}
    for row in rows:
        if row.status != "ok":
            continue
        point = ",".join(f"{g}={row.params.get(f'config.method.params.{g}')}" for g in grid)
        groups.setdefault(f"k={row.params['k']}" + (f",{point}" if point else ""), []).append(row.metrics["score"])
    return {name: np.asarray(scores, dtype=float).reshape(-1, 1) for name, scores in groups.items()}


def to_rliable(plan: Plan, rows: list[Row], out: Path) -> None:
    """``<out>/<sweep>.npz`` (``dict(np.load(path))`` is rliable's score dict) and the same as
    ``<sweep>.json`` (pickle-free for any language) with the task, metric and direction."""
    from bench.tasks.table import LOWER_IS_BETTER  # lazy: keeps this module's imports to what every target needs

    arrays = score_arrays(plan, rows)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle
    atomic_write_bytes(out / f"{plan.sweep.name}.npz", buffer.getvalue())
    metric = next((r.params["metric"] for r in rows if r.status == "ok"), None)
    atomic_write_json(
        out / f"{plan.sweep.name}.json",
        {
            "sweep": plan.sweep.name,
            "tasks": [plan.sweep.task.name],
            "metric": metric,
            "higher_is_better": plan.sweep.task.name not in LOWER_IS_BETTER,
            "scores": {name: a.tolist() for name, a in arrays.items()},
        },
    )


def to_parquet(plan: Plan, rows: list[Row], out: Path) -> None:
    """``<out>/<sweep>.parquet``: one row per record, params then metrics (null when not ok)."""
    import pyarrow as pa  # lazy: optional dependency
    import pyarrow.parquet as pq  # lazy: optional dependency

    metric_names = list(dict.fromkeys(m for r in rows for m in r.metrics))
    param_names = list(dict.fromkeys(p for r in rows for p in r.params))
    columns = {n: [r.params.get(n) for r in rows] for n in param_names}
    columns.update({n: [r.metrics.get(n) for r in rows] for n in metric_names})
    table = (
        pa.table({n: pa.array(v) for n, v in columns.items()}) if rows else pa.table({"key": pa.array([], pa.string())})
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(out / f"{plan.sweep.name}.parquet", buffer.getvalue())


EXPORTERS: dict[str, Callable[[Plan, list[Row], Path], None]] = {
    "tensorboard": to_tensorboard,
    "mlflow": to_mlflow,
    "wandb": to_wandb,
    "rliable": to_rliable,
    "parquet": to_parquet,
}


def default_out(plan: Plan, target: str) -> Path:
    return plan.sweep.reports_dir() / "export" / target


def _claim(out: Path, target: str) -> None:
    """Make ``out`` an empty folder owned by this target's export: a new or empty folder gets the
    marker, one an earlier export of the same target wrote is emptied, anything else is refused."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: expected a folder, found a file")
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file() or marker.read_text().strip() != target:
            raise UserError(
                f"--out {out}: expected an empty folder or one an earlier `bench export --to {target}` wrote; "
                "it holds other files (choose another --out)"
            )
        for entry in out.iterdir():
            if entry.name != MARKER:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    atomic_write_bytes(marker, f"{target}\n".encode())


def export(plan: Plan, target: str, out: Path | None = None) -> tuple[Path, int]:
    """Export the sweep's records to ``target`` (a name of ``EXPORTERS``) in ``out`` (default
    ``reports/<sweep>/export/<target>``); returns the folder and the number of records."""
    if target not in EXPORTERS:
        raise UserError(f"--to: expected one of {', '.join(EXPORT_TARGETS)}, got {target!r}")
    out = Path(out) if out is not None else default_out(plan, target)
    check_installed(target)
    rows = sweep_rows(plan)
    _claim(out, target)
    EXPORTERS[target](plan, rows, out)
    return out, len(rows)
