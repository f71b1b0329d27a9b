"""End to end on real data: the quickstart (full protocol on digits) and a toy GLUE sweep."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import GLUE, bench_cli, records

from bench.core.energy import SOURCES
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

REPO = Path(__file__).resolve().parents[1]
REPORT_FILES = {
    "jobs.csv",
    "by_combination.csv",
    "summary_by_k.csv",
    "budget.csv",
    "teachers.csv",
    "robust_by_k.csv",
    "compare_k.csv",
    "expected_budget.csv",
    "robust_by_k.png",
    "expected_budget.png",
    "by_k.png",
    "by_k.pdf",
    "budget.png",
    "budget.pdf",
    "report.md",
    "report.html",
}


@pytest.mark.slow
def test_quickstart_full_protocol(project):
    shutil.copy(REPO / "sweeps" / "quickstart.toml", project / "quickstart.toml")
    proc = bench_cli("run", "quickstart.toml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    plan = make_plan(load_sweep(project / "quickstart.toml"))
    assert len(plan.jobs) == 189
    recs = records(project / "results" / "quickstart")
    assert set(recs) == {j.key for j in plan.jobs}
    assert all(r["status"] == "ok" and 0.5 < r["score"] <= 1.0 for r in recs.values())
    assert REPORT_FILES <= {p.name for p in (project / "reports" / "quickstart").iterdir()}
    import pandas as pd

    summary = pd.read_csv(project / "reports" / "quickstart" / "summary_by_k.csv")
    assert summary["k"].tolist() == [1, 2, 3, 4, 5, 6]
    assert summary["n_combinations"].tolist() == [6, 15, 20, 15, 6, 1]
    assert (summary["worst"] <= summary["mean"]).all() and (summary["mean"] <= summary["best"]).all()
    # the report: paper, size-matched and interval columns side by side, and the verdict
    report = (project / "reports" / "quickstart" / "report.md").read_text()
    assert (
        "| k | worst (paper) | worst (m=3) | worst vs k=1 (95% CI) | best (paper) | best (m=3) | best vs k=1 (95% CI) |"
        in report
    )
    assert "## Verdict" in report and "At k=6 the size-matched worst case" in report and "95% CI of the gain" in report
    # the paper's single- vs multi-teacher comparison, raw and size-matched
    assert "| k | worst: multi (paper) | worst: single pooled (paper) | worst: gap (paper) |" in report
    # energy in every record and teacher, with its source; the budget in seconds and kWh
    assert all(r["energy"]["source"] in SOURCES and r["energy"]["kwh"] > 0 for r in recs.values())
    metas = [json.loads(p.read_text()) for p in (project / "teachers" / "digits").glob("*/meta.json")]
    assert len(metas) == 6 and all(m["energy"]["kwh"] > 0 for m in metas)
    bud = pd.read_csv(project / "reports" / "quickstart" / "budget.csv")
    assert (bud["compute_kwh"] > bud["student_kwh"]).all()
    assert "Energy: the sweep's 195 stored jobs and teachers used" in report
    # each record keeps its per-example predictions: they reproduce its score
    from bench.core.records import decode_array
    from bench.engines.runners import load_task

    rec = next(iter(recs.values()))
    dev = load_task(rec["config"], str(project / ".cache" / "bench")).splits["dev"]
    preds = decode_array(rec["predictions"]["dev"])
    assert len(preds) == len(dev.labels) and float(np.mean(preds == dev.labels)) == pytest.approx(rec["score"])
    again = bench_cli("run", "quickstart.toml", "--no-report", cwd=project)
    assert again.returncode == 0 and "ran 0 jobs" in again.stderr


@pytest.mark.slow
@pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present")
def test_glue_toy_sweep_and_teacher_cache(project):
    text = (REPO / "sweeps" / "glue-toy.toml").read_text().replace('"../shared/data/glue"', json.dumps(str(GLUE)))
    (project / "glue-toy.toml").write_text(text)
    proc = bench_cli("run", "glue-toy.toml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    sweep = load_sweep(project / "glue-toy.toml")
    plan = make_plan(sweep)
    recs = records(project / "results" / "glue-toy")
    assert set(recs) == {j.key for j in plan.jobs} and len(recs) == 14
    for r in recs.values():
        assert r["status"] == "ok" and r["metric"] == "mcc" and -1 <= r["score"] <= 1
        assert set(r["scores"]["dev"]) == {"mcc", "accuracy"}
        assert r["timings"]["train"] > 0 and r["provenance"]["versions"]["torch"]
    assert REPORT_FILES <= {p.name for p in (project / "reports" / "glue-toy").iterdir()}
    # students that predict one class score MCC 0 in every run: the report says so, no verdict
    report = (project / "reports" / "glue-toy" / "report.md").read_text()
    if len({r["score"] for r in recs.values()}) == 1:
        assert "has the same score" in report and "no verdict" in report

    # the cached teacher outputs are what the stored teacher computes
    from safetensors.torch import load_model

    from bench.core.config import train_spec
    from bench.models.builders import MODELS
    from bench.tasks.glue import load_glue
    from bench.training.loop import predict_logits
    from bench.training.teachers import load_outputs, teacher_dir

    t = plan.teachers[0]
    data = load_glue(sweep.task, project / ".cache" / "bench")
    model = MODELS["bert"].build(train_spec(t.config["model"], t.seed), data.shape)
    load_model(model, str(teacher_dir(project / "teachers", "cola", t.key) / "model.safetensors"))
    logits = predict_logits(model, data.splits["dev"], torch.device("cpu"))
    np.testing.assert_allclose(logits, load_outputs(project / "teachers", "cola", t.key)["dev"], atol=1e-5)


def test_pretrained_minilm_loads_offline_as_a_classifier():
    from bench.core.config import TrainSpec
    from bench.models.builders import MODELS, Shape

    spec = TrainSpec(model="bert", pretrained="all-minilm-l6-v2", params={"num_hidden_layers": 1})
    model = MODELS["bert"].build(spec, Shape(num_labels=3))
    assert model.hf.config.num_hidden_layers == 1 and model.hf.config.hidden_size == 384
    ids = torch.tensor([[101, 7592, 2088, 102]])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert out.shape == (1, 3)


@pytest.mark.slow
@pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present")
def test_augmented_tinybert_sweep_caches_teacher_outputs_on_augmented_examples(project):
    text = (REPO / "sweeps" / "glue-toy.toml").read_text().replace('"../shared/data/glue"', json.dumps(str(GLUE)))
    text = (
        text.replace('name = "glue-toy"', 'name = "aug-toy"')
        .replace("teachers = 3", "teachers = 2")
        .replace("repeats = 1", "repeats = 2")
        .replace("train_subset = 256", "train_subset = 48")
        .replace('name = "kd"\ntemperature = 2.0\nalpha = 0.5', 'name = "tinybert"\nild_epochs = 1')
        .replace("[grid]\ntemperature = [1.0, 4.0]\n", "[augment]\nfactor = 2\ncandidates = 5\n")
    )
    (project / "aug.toml").write_text(text)
    proc = bench_cli("run", "aug.toml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    plan = make_plan(load_sweep(project / "aug.toml"))
    recs = records(project / "results" / "aug-toy")
    assert set(recs) == {j.key for j in plan.jobs} and len(plan.augments) == 2
    assert all(r["status"] == "ok" and "augmented" in r["teacher_work"]["logits"] for r in recs.values())

    from bench.tasks.glue import text_split
    from bench.training.augment import augmented_path
    from bench.training.loop import predict_logits
    from bench.training.teachers import augmented_outputs_path, load_teacher_model

    sweep = plan.sweep
    from bench.tasks.glue import load_glue

    data = load_glue(sweep.task, project / ".cache" / "bench")
    for o in plan.outputs:  # each cached target is what the stored teacher says on that augmented example
        with np.load(augmented_path(str(project / ".cache" / "bench"), "cola", o.augment_key)) as z:
            split = text_split(dict(z))
        assert len(split) == 2 * 48
        model = load_teacher_model(project / "teachers", "cola", o.teacher_key, data.shape, torch.device("cpu"))
        cached = np.load(augmented_outputs_path(project / "teachers", "cola", o.teacher_key, o.augment_key))["train"]
        np.testing.assert_allclose(predict_logits(model, split, torch.device("cpu")), cached, atol=1e-5)
