"""TinyBERT and DistilBERT jobs with k teachers: the primary's features are used, the KD target
is the mean of the k teachers' cached logits (asserted on the tensors)."""

import numpy as np
import pytest
import torch
from helpers import GLUE

from bench.driver.run import distill_payload, teacher_payload
from bench.engines.runners import run_distill, run_teacher
from bench.methods import distilbert, tinybert
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep
from bench.training.teachers import load_outputs

pytestmark = pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present")

SPEC = """
name = "{method}"
teachers = 3
[task]
name = "cola"
data = "{glue}"
tokenizer = "all-minilm-l6-v2"
max_length = 24
train_subset = 40
eval_subset = 16
[teacher]
model = "bert"
params = {{ num_hidden_layers = 2, hidden_size = 24, num_attention_heads = 2, intermediate_size = 32 }}
epochs = 1
batch_size = 16
seed = 7
[student]
model = "bert"
{student}
epochs = 1
batch_size = 16
[method]
name = "{method}"
"""

STUDENTS = {
    "tinybert": "params = { num_hidden_layers = 1, hidden_size = 12, num_attention_heads = 2, intermediate_size = 16 }",
    "distilbert": "",
}


def _job(project, method, student=None):
    spec = project / f"{method}.toml"
    spec.write_text(SPEC.format(method=method, glue=GLUE, student=STUDENTS[method] if student is None else student))
    plan = make_plan(load_sweep(spec))
    cpu = torch.device("cpu")
    for t in plan.teachers:
        run_teacher(teacher_payload(plan, t).dispatched(1, "cpu#0", "cpu", 0.0), cpu)
    job = next(j for j in plan.jobs if j.k == 3 and j.primary == 1)
    payload = distill_payload(plan, job).dispatched(1, "cpu#0", "cpu", 0.0)
    root = str(project / "teachers")
    mean = np.mean([load_outputs(root, "cola", k)["train"] for k in job.teacher_keys], axis=0)
    return plan, job, payload, mean


def _spy_teacher_loads(monkeypatch, module):
    loaded = []
    real = module.load_teacher_model

    def spy(root, task, key, shape, device):
        model = real(root, task, key, shape, device)
        loaded.append((key, model))
        return model

    monkeypatch.setattr(module, "load_teacher_model", spy)
    return loaded


def _spy_feature_calls(monkeypatch, module):
    calls = []
    real = module.forward_features

    def spy(model, batch, scores=True):
        calls.append((model, scores))
        return real(model, batch, scores=scores)

    monkeypatch.setattr(module, "forward_features", spy)
    return calls


def test_tinybert_job_uses_primary_features_and_mean_logits(project, monkeypatch):
    plan, job, payload, mean = _job(project, "tinybert")
    loaded = _spy_teacher_loads(monkeypatch, tinybert)
    calls = _spy_feature_calls(monkeypatch, tinybert)
    targets = []
    real_sce = tinybert.soft_cross_entropy
    monkeypatch.setattr(
        tinybert, "soft_cross_entropy", lambda s, t, temp: targets.append(t.detach().clone()) or real_sce(s, t, temp)
    )
    record = run_distill(payload, torch.device("cpu"))

    # intermediate features come from exactly one teacher: the primary
    assert [key for key, _ in loaded] == [plan.teachers[1].key]
    teacher_model = loaded[0][1]
    assert any(m is teacher_model and scores for m, scores in calls)
    assert all(m is not teacher_model or scores for m, scores in calls)
    # the prediction-layer target is the mean of the 3 cached teachers' logits, each example once
    seen = torch.cat(targets).numpy()
    assert seen.shape == mean.shape
    np.testing.assert_allclose(np.sort(seen, axis=0), np.sort(mean.astype(np.float32), axis=0), rtol=1e-5, atol=1e-6)
    assert record["status"] == "ok" and record["teacher_keys"] == list(job.teacher_keys)
    assert record["teacher_work"]["logits"] == "cached" and "online" in record["teacher_work"]["features"]
    assert record["fit"]["ild_steps"] > 0


def test_tinybert_ild_runs_at_ild_lr_and_pld_at_student_lr(project, monkeypatch):
    """TinyBERT's code runs ILD at 5e-5 and PLD at 3e-5: two learning rates, one per stage."""
    spec = STUDENTS["tinybert"] + "\nlr = 3e-5"
    monkeypatch.setitem(STUDENTS, "tinybert", spec)
    _, _, payload, _ = _job(project, "tinybert")
    payload.config["method"]["params"]["ild_lr"] = 5e-5
    stages = []
    real = tinybert.train
    monkeypatch.setattr(
        tinybert,
        "train",
        lambda model, split, train_spec, *a, **kw: (
            stages.append((train_spec.epochs, train_spec.lr, train_spec.schedule, train_spec.warmup_ratio))
            or real(model, split, train_spec, *a, **kw)
        ),
    )
    assert run_distill(payload, torch.device("cpu"))["status"] == "ok"
    # ILD: ild_lr, constant (TinyBERT's schedule 'none'); PLD: student.lr with the student's schedule
    assert stages == [(1, 5e-5, "constant", 0.0), (1, 3e-5, "linear", 0.0)]


def test_distilbert_job_starts_from_primary_and_uses_mean_logits(project, monkeypatch):
    plan, job, payload, mean = _job(project, "distilbert")
    loaded = _spy_teacher_loads(monkeypatch, distilbert)
    calls = _spy_feature_calls(monkeypatch, distilbert)
    targets, inits = [], []
    real_kd = distilbert.kd_loss
    monkeypatch.setattr(
        distilbert, "kd_loss", lambda s, t, y, temp, a: targets.append(t.detach().clone()) or real_kd(s, t, y, temp, a)
    )
    real_init = distilbert.primary_layers
    monkeypatch.setattr(
        distilbert, "primary_layers", lambda teacher, layers: inits.append(teacher) or real_init(teacher, layers)
    )
    record = run_distill(payload, torch.device("cpu"))
    assert [key for key, _ in loaded] == [plan.teachers[1].key]
    assert inits == [loaded[0][1]]  # the student is built from the primary
    assert all(scores is False for _, scores in calls)  # only hidden states, no attention scores
    assert sum(m is loaded[0][1] for m, _ in calls) == len(targets)  # one primary forward per step
    seen = torch.cat(targets).numpy()
    np.testing.assert_allclose(np.sort(seen, axis=0), np.sort(mean.astype(np.float32), axis=0), rtol=1e-5, atol=1e-6)
    assert record["n_params"] > 0 and record["status"] == "ok"


def test_distilbert_student_from_pretrained_folder_as_the_paper_does(project, monkeypatch):
    """The paper initialises every student from distilbert-base-uncased: here a tiny DistilBERT
    saved to a folder, same width as the teacher; the student must start from its weights (and
    run without token_type_ids, which DistilBERT does not take)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(1)
    folder = project / "tiny-distilbert"
    DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=30522, dim=24, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=64)
    ).save_pretrained(folder)
    plan, job, payload, _ = _job(project, "distilbert", student=f'pretrained = "{folder}"')
    inits = []
    real = distilbert.initial_student
    monkeypatch.setattr(
        distilbert, "initial_student", lambda ctx, teacher: inits.append(real(ctx, teacher)) or inits[-1]
    )
    saved = DistilBertForSequenceClassification.from_pretrained(folder)
    original = saved.distilbert.transformer.layer[0].ffn.lin1.weight.detach().clone()
    record = run_distill(payload, torch.device("cpu"))
    assert record["status"] == "ok"
    student = inits[0]
    assert student.hf.config.model_type == "distilbert" and student.hf.config.n_layers == 1
    moved = student.hf.distilbert.transformer.layer[0].ffn.lin1.weight.detach()
    assert not torch.equal(moved, original)  # trained from there ...
    assert (moved - original).abs().max() < 0.05  # ... a small step away after one short epoch


def test_distilbert_student_width_must_match_the_teacher(project):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    folder = project / "narrow"
    DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=30522, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=64)
    ).save_pretrained(folder)
    _, _, payload, _ = _job(project, "distilbert", student=f'pretrained = "{folder}"')
    with pytest.raises(ValueError, match="hidden size 16, the teacher 24"):
        run_distill(payload, torch.device("cpu"))
