"""`bench export`: a tiny real sweep (one failed job) written for TensorBoard, MLflow, W&B, rliable
and Parquet, each read back with the target's own library in its offline mode."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import duckdb
import mlflow.tracking
import numpy as np
import pandas as pd
import pytest
from helpers import bench_cli, digits_spec, records, without_packages
from rliable import metrics as rly_metrics  # not rliable.library: its arch<8 pin fails under pandas 3
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from bench.analysis.export import EXPORTERS, MARKER, export, flat_row, scoped_env
from bench.analysis.options import EXPORT_TARGETS
from bench.analysis.stats import iqm
from bench.core.errors import UserError
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

UMASK = 0o002  # permissive: a file a library made 0600 would show


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished 6-job digits sweep (N=2, r=2) with one job failed, exported to every target from
    its own folder as the current directory, under a permissive umask."""
    folder = tmp_path_factory.mktemp("export")
    spec = digits_spec(folder, n=2, r=2, run="retries = 0")
    plan = make_plan(load_sweep(spec))
    victim = plan.jobs[-1].key
    proc = bench_cli("run", str(spec), "--no-report", "--quiet", cwd=folder, env={"BENCH_RAISE_ON": victim})
    assert proc.returncode == 1, proc.stderr
    cwd, umask = os.getcwd(), os.umask(UMASK)
    try:
        os.chdir(folder)
        outs = {t: folder / export(plan, t)[0] for t in EXPORT_TARGETS}
    finally:
        os.chdir(cwd)
        os.umask(umask)
    recs = records(folder / "results" / "tiny")
    assert [r["status"] for r in recs.values()].count("failed") == 1
    return {"folder": folder, "spec": spec, "plan": plan, "records": recs, "victim": victim, "outs": outs}


def test_every_target_has_an_exporter():
    assert tuple(EXPORTERS) == EXPORT_TARGETS


def test_a_row_is_the_flattened_config_and_the_numbers(sweep):
    ok = next(r for r in sweep["records"].values() if r["status"] == "ok")
    row = flat_row(ok)
    assert row.params["key"] == ok["key"] and row.params["k"] == ok["k"] and row.params["method"] == "kd"
    assert row.params["config.student.lr"] == 0.01 and row.params["config.student.params.hidden"] == "[8]"
    assert row.params["config.method.params.temperature"] == ok["config"]["method"]["params"]["temperature"]
    assert row.params["teacher_keys"] == ",".join(ok["teacher_keys"]) and row.params["seed"] == ok["config"]["seed"]
    assert row.metrics["score"] == ok["score"] and row.metrics["dev_accuracy"] == ok["scores"]["dev"]["accuracy"]
    assert row.metrics["t_total"] == ok["timings"]["total"]
    assert row.metrics["energy_kwh"] == ok["energy"]["kwh"] and row.params["energy_source"] == ok["energy"]["source"]
    failed = flat_row(sweep["records"][sweep["victim"]])
    assert failed.status == "failed" and failed.metrics == {} and failed.params["config.student.lr"] == 0.01


def test_parquet_reads_back_in_pandas_and_duckdb(sweep):
    path = sweep["outs"]["parquet"] / "tiny.parquet"
    df = pd.read_parquet(path)
    recs = sweep["records"]
    assert sorted(df["key"]) == sorted(recs) and len(df) == 6
    for _, row in df.iterrows():
        rec = recs[row["key"]]
        assert row["status"] == rec["status"] and row["k"] == rec["k"]
        assert pd.isna(row["score"]) if rec["status"] != "ok" else row["score"] == rec["score"]
    ((n, n_ok, mean),) = duckdb.sql(f"select count(*), count(score), avg(score) from '{path}'").fetchall()
    ok_scores = [r["score"] for r in recs.values() if r["status"] == "ok"]
    assert (n, n_ok) == (6, 5) and mean == pytest.approx(np.mean(ok_scores), abs=1e-12)


def test_tensorboard_runs_read_back_with_its_event_accumulator(sweep):
    root = sweep["outs"]["tensorboard"] / "tiny"
    assert {p.name for p in root.iterdir()} == set(sweep["records"])
    for key, rec in sweep["records"].items():
        acc = EventAccumulator(str(root / key))
        acc.Reload()
        scalars = acc.Tags()["scalars"]
        if rec["status"] != "ok":
            assert scalars == []
            continue
        assert {"score", "dev_accuracy", "test_accuracy", "t_total"} <= set(scalars)
        assert acc.Scalars("score")[0].value == pytest.approx(rec["score"], rel=1e-6)  # float32 in events
        plugins = acc.PluginTagToContent("hparams")
        assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins


def test_mlflow_file_store_reads_back_with_its_client(sweep):
    uri = (sweep["outs"]["mlflow"] / "mlruns").resolve().as_uri()
    with scoped_env({"MLFLOW_ALLOW_FILE_STORE": "true"}):
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("tiny")
        runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(r.data.tags["key"] for r in runs) == sorted(sweep["records"])
    for run in runs:
        rec = sweep["records"][run.data.tags["key"]]
        assert run.info.run_name == rec["key"] and run.data.tags["status"] == rec["status"]
        assert run.data.params["config.student.lr"] == "0.01" and run.data.params["k"] == str(rec["k"])
        assert run.info.status == ("FINISHED" if rec["status"] == "ok" else "FAILED")
        if rec["status"] == "ok":
            assert run.data.metrics["score"] == rec["score"] and run.data.metrics["t_total"] == rec["timings"]["total"]
        else:
            assert run.data.metrics == {}


def _wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file: W&B's LevelDB-style log (a 7-byte header, then 32 KiB
    blocks of chunks: crc32c, little-endian length, type full=1 first=2 middle=3 last=4), each
    record parsed with wandb's own message class."""
    data, block, out, pending = path.read_bytes(), 32768, [], b""
    assert data[:4] == b":W&B"
    pos = 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def test_wandb_offline_runs_hold_config_and_summary(sweep):
    runs = sorted((sweep["outs"]["wandb"] / "wandb").glob("offline-run-*"))
    assert len(runs) == 6
    seen = set()
    for folder in runs:
        (log,) = folder.glob("run-*.wandb")
        recs = _wandb_records(log)
        (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        rec = sweep["records"][run.display_name]
        seen.add(run.display_name)
        assert run.run_group == "tiny" and run.project == "bench" and list(run.tags) == [rec["status"]]
        config = {i.key: json.loads(i.value_json) for i in run.config.update}
        assert config["config.student.lr"] == 0.01 and config["key"] == rec["key"] and config["k"] == rec["k"]
        summary = {
            i.key: i.value_json for r in recs if r.WhichOneof("record_type") == "summary" for i in r.summary.update
        }
        if rec["status"] == "ok":
            assert float(summary["score"]) == rec["score"]
        else:
            assert "score" not in summary
    assert seen == set(sweep["records"])


def test_rliable_arrays_give_bench_iqm(sweep):
    scores = dict(np.load(sweep["outs"]["rliable"] / "tiny.npz"))
    ok = [r for r in sweep["records"].values() if r["status"] == "ok"]
    assert set(scores) == {"k=1", "k=2"} and sum(a.shape[0] for a in scores.values()) == len(ok)
    assert all(a.shape[1] == 1 for a in scores.values())
    for name, array in scores.items():
        k = int(name.split("=")[1])
        mine = [r["score"] for r in ok if r["k"] == k]
        assert rly_metrics.aggregate_iqm(array) == pytest.approx(iqm(mine), abs=1e-12)
        assert rly_metrics.aggregate_mean(array) == pytest.approx(np.mean(mine), abs=1e-12)


def test_exports_write_only_into_their_folder_with_the_umask(sweep):
    folder = sweep["folder"]
    assert not any((folder / name).exists() for name in ("mlruns", "wandb", "runs", "mlflow.db"))
    for target, out in sweep["outs"].items():
        assert out == folder / "reports" / "tiny" / "export" / target and out.is_dir()
        assert (out / MARKER).read_text().strip() == target
        for path in out.rglob("*"):
            mode = path.stat().st_mode & 0o777
            if path.is_file() and not path.is_symlink():
                assert mode & UMASK == 0 and mode & 0o066 == 0o066 & ~UMASK, f"{path}: {oct(mode)}"
    assert {p.name for p in (folder / "reports" / "tiny").iterdir()} == {"export"}


def test_a_second_export_replaces_the_first_and_a_foreign_folder_is_refused(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(sweep["folder"])  # the spec's paths are relative to it
    plan = sweep["plan"]
    out, n = export(plan, "parquet", tmp_path / "p")
    (out / "old.parquet").write_bytes(b"stale")
    assert export(plan, "parquet", out) == (out, 6) and not (out / "old.parquet").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="holds other files"):
        export(plan, "rliable", tmp_path / "mine")
    with pytest.raises(UserError, match="earlier `bench export --to rliable`"):
        export(plan, "rliable", out)  # a parquet folder is not rliable's
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep" and (out / "tiny.parquet").is_file()
    for _ in range(2):  # MLflow's store, cached by the first export, sees its folder emptied
        mlflow_out, n = export(plan, "mlflow", tmp_path / "m")
        assert n == 6 and len(list((mlflow_out / "mlruns").glob("*/*/meta.yaml"))) == 6


def test_scoped_env_restores_the_environment(monkeypatch):
    monkeypatch.setenv("BENCH_T_SET", "before")
    monkeypatch.delenv("BENCH_T_UNSET", raising=False)
    with scoped_env({"BENCH_T_SET": "during", "BENCH_T_UNSET": "during"}):
        assert os.environ["BENCH_T_SET"] == os.environ["BENCH_T_UNSET"] == "during"
    assert os.environ["BENCH_T_SET"] == "before" and "BENCH_T_UNSET" not in os.environ


def test_cli_exports_a_results_folder_and_names_the_extra_when_missing(sweep, tmp_path):
    folder = sweep["folder"]
    results = str(folder / "results" / "tiny")
    proc = bench_cli("export", results, "--to", "rliable", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "export: 6 records to rliable" in proc.stdout and (tmp_path / "r" / "tiny.json").is_file()
    env = without_packages(tmp_path / "site", "pyarrow")
    proc = bench_cli("export", results, "--to", "parquet", "--out", str(tmp_path / "p"), cwd=tmp_path, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert 'pip install "bench[export]"' in proc.stderr and "pyarrow" in proc.stderr
    assert not (tmp_path / "p").exists()
    bad = bench_cli("export", results, "--to", "csv", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
