"""Teachers and students loadable without bench: a tiny BERT teacher's hf/ folder and a saved
student load with transformers' Auto classes and give the logits bench computed (the teacher's
cached outputs.npz, the student as it was evaluated); a GPT teacher likewise; students of other
families as a state dict; run.save_students = "best" keeps one student per k."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import GLUE, bench_cli, digits_spec, records

from bench.core.config import task_spec
from bench.core.contracts import JobPayload
from bench.core.errors import SpecError
from bench.core.files import atomic_write_json
from bench.core.records import decode_array
from bench.driver.rerun import rerun_job
from bench.driver.run import distill_payload, pending_work, teacher_payload
from bench.engines import runners
from bench.engines.runners import run_distill, run_teacher
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep, parse_sweep
from bench.tasks.glue import glue_texts
from bench.training.export import load_state_dict_model
from bench.training.loop import predict_logits
from bench.training.teachers import check_teacher, load_meta, load_outputs, load_teacher_model, teacher_dir

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CPU = torch.device("cpu")

BERT_SPEC = """
name = "export"
teachers = 2
k = [1, 2]
[task]
name = "cola"
data = "{glue}"
tokenizer = "all-minilm-l6-v2"
max_length = 24
train_subset = 32
eval_subset = 12
[teacher]
model = "bert"
params = {{ num_hidden_layers = 1, hidden_size = 24, num_attention_heads = 2, intermediate_size = 32 }}
epochs = 1
batch_size = 16
seed = 7
[student]
model = "bert"
params = {{ num_hidden_layers = 1, hidden_size = 12, num_attention_heads = 2, intermediate_size = 16 }}
epochs = 1
batch_size = 16
[method]
name = "kd"
[run]
save_students = "all"
"""


def _dispatched(payload: JobPayload) -> JobPayload:
    return payload.dispatched(1, "cpu#0", "cpu", 0.0)


def _spy_evaluated_models(monkeypatch) -> list:
    """The students run_distill evaluates (the model bench scored is the one it saves)."""
    seen = []
    real = runners.evaluate

    def spy(data, model, device, predictions=None):
        seen.append(model)
        return real(data, model, device, predictions)

    monkeypatch.setattr(runners, "evaluate", spy)
    return seen


def _hf_logits(folder: Path, texts: list[tuple[str, ...]], max_length: int) -> tuple[np.ndarray, list]:
    """Logits of a transformers folder on ``texts``, loaded with the Auto classes only; and the ids."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(*map(list, zip(*texts)), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits.numpy()
    ids = [row[mask.bool()].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"])]
    return logits, ids


@pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present")
def test_bert_teacher_and_student_load_with_transformers(project, monkeypatch):
    (project / "s.toml").write_text(BERT_SPEC.format(glue=GLUE))
    plan = make_plan(load_sweep(project / "s.toml"))
    root, n = str(project / "teachers"), 6
    for t in plan.teachers:
        run_teacher(_dispatched(teacher_payload(plan, t)), CPU)
    spec = task_spec(plan.jobs[0].config)
    texts = glue_texts(spec)["dev"][0][:n]
    data = runners.load_task(plan.jobs[0].config, str(project / ".cache" / "bench"))
    dev = data.splits["dev"]

    # the teacher: hf/ gives the logits bench cached, from the same token ids
    key = plan.teachers[0].key
    folder = teacher_dir(root, "cola", key) / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in folder.iterdir()}
    logits, ids = _hf_logits(folder, texts, spec.max_length)
    assert ids == [dev.ids[dev.offsets[i] : dev.offsets[i + 1]].tolist() for i in range(n)]
    np.testing.assert_allclose(logits, load_outputs(root, "cola", key)["dev"][:n], atol=1e-5)
    card = (folder / "README.md").read_text()
    meta = load_meta(root, "cola", key)
    assert "trained by sweep: export" in card and "teacher index: 0" in card and "seed: 7" in card
    assert f"| dev | mcc | {meta['scores']['dev']['mcc']:.4f} |" in card
    # hf/'s files are covered by meta.json's checksums; bench still loads model.safetensors
    assert {"hf/config.json", "hf/model.safetensors", "hf/README.md"} <= set(meta["files"])
    assert check_teacher(root, "cola", key) is None
    bench_model = load_teacher_model(root, "cola", key, data.shape, CPU)
    np.testing.assert_allclose(predict_logits(bench_model, dev, CPU)[:n], logits, atol=1e-5)
    with open(folder / "README.md", "a") as f:
        f.write("edited\n")
    assert (
        check_teacher(root, "cola", key) == "hf/README.md truncated or altered (size or sha256 differs from meta.json)"
    )
    # a teacher stored before hf/ existed (no folder, meta.json lists only its two files) is sound and not retrained
    old = plan.teachers[1].key
    shutil.rmtree(teacher_dir(root, "cola", old) / "hf")
    meta = load_meta(root, "cola", old)
    atomic_write_json(
        teacher_dir(root, "cola", old) / "meta.json",
        {**meta, "files": {name: v for name, v in meta["files"].items() if not name.startswith("hf/")}},
    )
    assert check_teacher(root, "cola", old) is None
    assert old not in {t.key for t in pending_work(plan)[0]}

    # a student saved with save_students = "all": its folder gives the logits of the model bench scored
    seen = _spy_evaluated_models(monkeypatch)
    job = next(j for j in plan.jobs if j.k == 2)
    record = run_distill(_dispatched(distill_payload(plan, job)), CPU)
    assert record["student"] == {
        "path": str((project / "results" / "export" / "students" / job.key).resolve()),
        "format": "transformers",
    }
    t = record["timings"]
    assert t["save"] > 0 and t["total"] == pytest.approx(t["setup"] + t["train"] + t["eval"])  # saving is apart
    logits, _ = _hf_logits(Path(record["student"]["path"]), texts, spec.max_length)
    np.testing.assert_allclose(logits, predict_logits(seen[0], dev, CPU)[:n], atol=1e-5)
    assert logits.argmax(1).tolist() == decode_array(record["predictions"]["dev"])[:n].tolist()
    card = (Path(record["student"]["path"]) / "README.md").read_text()
    assert f"job key: {job.key}" in card and "teachers (k): 2" in card


def test_state_dict_student_and_best_per_k(project):
    """Digits (mlp): students saved as a state dict + model.json; with "best", one per k is kept,
    the best one, and the records of the others say nothing is saved."""
    spec = digits_spec(project, n=2, r=2, train_subset=200, run='save_students = "best"')
    proc = bench_cli("run", str(spec), "--no-report", "--quiet", cwd=project)
    assert proc.returncode == 0, proc.stderr
    recs = records(project / "results" / "tiny")
    saved = {k: r for k, r in recs.items() if r["student"] is not None}
    by_k: dict[int, list] = {}
    for r in recs.values():
        by_k.setdefault(r["k"], []).append(r)
    assert sorted(r["k"] for r in saved.values()) == sorted(by_k)  # one per k
    for r in saved.values():
        assert r["score"] == max(x["score"] for x in by_k[r["k"]])
        assert r["student"]["format"] == "state-dict"
    assert sorted(p.name for p in (project / "results" / "tiny" / "students").iterdir()) == sorted(saved)
    # the saved state dict rebuilds the student that made the record's predictions
    from bench.tasks.digits import load_digits

    r = next(iter(saved.values()))
    model = load_state_dict_model(r["student"]["path"])
    assert json.loads((Path(r["student"]["path"]) / "model.json").read_text())["model"]["model"] == "mlp"
    data = load_digits(task_spec(r["config"]), project / ".cache")
    logits = predict_logits(model, data.splits["dev"], CPU)
    assert logits.argmax(1).tolist() == decode_array(r["predictions"]["dev"]).tolist()
    # bench rerun saves the student again (into its scratch): the same weights on CPU
    _, new = rerun_job(project / "results" / "tiny" / "records" / f"{r['key']}.json")
    assert new["student"]["path"] != r["student"]["path"] and new["score"] == r["score"]
    again = load_state_dict_model(new["student"]["path"])
    np.testing.assert_array_equal(predict_logits(again, data.splits["dev"], CPU), logits)


@pytest.mark.skipif(not (DATA / "lm-corpora").is_dir(), reason="../shared/data not present")
def test_gpt_teacher_loads_with_transformers(project):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = {
        "name": "lmx",
        "teachers": 1,
        "task": {
            "name": "lm",
            "data": str(DATA / "lm-corpora" / "tinyshakespeare.txt"),
            "vocab_size": 300,
            "max_length": 16,
            "train_subset": 32,
            "eval_subset": 8,
            "teacher_topk": 0,
        },
        "teacher": {"model": "gpt", "params": {"n_layer": 1, "n_embd": 16, "n_head": 2}, "epochs": 1},
        "student": {"model": "gpt", "params": {"n_layer": 1, "n_embd": 8, "n_head": 2}, "seed": 100},
        "method": {"name": "lm-kd"},
    }
    plan = make_plan(parse_sweep(spec, str(project / "s.toml")))
    run_teacher(_dispatched(teacher_payload(plan, plan.teachers[0])), CPU)
    key, root = plan.teachers[0].key, str(project / "teachers")
    folder = teacher_dir(root, "lm", key) / "hf"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = runners.load_task(plan.jobs[0].config, str(project / ".cache" / "bench"))
    train = data.splits["train"]
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert tokenizer(text)["input_ids"] == data.tokenizer.encode(text).ids
    blocks = torch.from_numpy(train.x[:4]).long()
    with torch.no_grad():
        logits = model(input_ids=blocks[:, :-1]).logits.numpy()
    cached = load_outputs(root, "lm", key)["logits"][:4].astype(np.float32)  # every logit, float16
    np.testing.assert_allclose(logits, cached, atol=2e-2, rtol=1e-3)
    assert "pipeline_tag: text-generation" in (folder / "README.md").read_text()


def test_save_students_is_checked_and_travels_in_the_payload():
    spec = {
        "name": "d",
        "teachers": 2,
        "task": {"name": "digits"},
        "teacher": {"model": "mlp"},
        "student": {"model": "mlp", "seed": 100},
        "run": {"save_students": "bset"},
    }
    with pytest.raises(SpecError, match="run.save_students.*expected one of: none, best, all.*did you mean 'best'"):
        parse_sweep(spec, "s.toml")
    plan = make_plan(parse_sweep({**spec, "run": {}}, "s.toml"))
    payload = distill_payload(plan, plan.jobs[0])
    assert payload.student_path is None  # default "none": nothing saved
    wire = payload.to_wire()
    assert JobPayload.from_wire(wire) == payload
    del wire["student_path"]  # a payload without the field (an older driver) reads as not saving
    assert JobPayload.from_wire(wire).student_path is None
    keys = [j.key for j in plan.jobs]
    plan = make_plan(parse_sweep({**spec, "run": {"save_students": "all"}}, "s.toml"))
    assert [j.key for j in plan.jobs] == keys  # not part of any job key
    assert distill_payload(plan, plan.jobs[0]).student_path.endswith(f"results/d/students/{plan.jobs[0].key}")
