"""The language-model arm: token-level KD loss by hand (with padding, the T^2 factor), the
k-teacher target from top-K caches, LAMBADA scoring with multi-token words, the data pipeline,
and a tiny LM sweep end to end on real text."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import bench_cli, records

from bench.core.errors import SpecError, UserError
from bench.models.losses import kd_loss, token_kd_loss
from bench.spec.load import parse_sweep
from bench.tasks.lm import blocks, continuation_scores, read_lambada, union_target

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def test_token_kd_loss_by_hand_with_padding():
    # two tokens, vocabulary of 2; the second token is padding and must not count
    s = torch.tensor([[0.0, 0.0], [5.0, -5.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [-9.0, 9.0]])  # teacher p = (3/4, 1/4) at T=1
    ids = torch.tensor([[0, 1], [0, 1]])
    labels = torch.tensor([1, 0])
    mask = torch.tensor([1.0, 0.0])
    # by hand, token 1 only: CE = -log(1/2); KL = 3/4 log(3/4 / 1/2) + 1/4 log(1/4 / 1/2)
    ce = math.log(2.0)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    got = token_kd_loss(s, ids, t, labels, mask, temperature=1.0, alpha=0.3)
    assert got.item() == pytest.approx(0.3 * ce + 0.7 * kl, rel=1e-6)
    # the padding row really is ignored: changing it changes nothing
    s2, t2 = s.clone(), t.clone()
    s2[1], t2[1] = torch.tensor([-3.0, 8.0]), torch.tensor([1.0, 1.0])
    assert token_kd_loss(s2, ids, t2, labels, mask, 1.0, 0.3).item() == pytest.approx(got.item())


def test_token_kd_loss_t_squared_factor_and_full_support_equals_kd_loss():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    labels = torch.randint(0, 5, (6,))
    ids = torch.arange(5).expand(6, 5)
    ones = torch.ones(6)
    for temp in (1.0, 2.0, 4.0):
        kl = F.kl_div(F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1), reduction="batchmean", log_target=True)
        pure_kd = token_kd_loss(s, ids, t, labels, ones, temp, alpha=0.0)
        assert pure_kd.item() == pytest.approx(temp**2 * kl.item(), rel=1e-5)  # the T^2 factor
        assert token_kd_loss(s, ids, t, labels, ones, temp, 0.5).item() == pytest.approx(
            kd_loss(s, t, labels, temp, 0.5).item(), rel=1e-5
        )


def test_token_kd_loss_ignores_minus_inf_entries_of_the_support():
    s = torch.tensor([[1.0, 2.0, 3.0]])
    ids = torch.tensor([[2, 2, 0]])
    t = torch.tensor([[1.0, -math.inf, 1.0]])  # a repeated id carries no probability
    got = token_kd_loss(s, ids, t, torch.tensor([0]), torch.ones(1), 1.0, 0.0)
    log_ps = F.log_softmax(s, -1)[0]
    assert got.item() == pytest.approx(
        0.5 * (math.log(0.5) - log_ps[2].item()) + 0.5 * (math.log(0.5) - log_ps[0].item())
    )


def test_union_target_means_the_teachers_with_their_floor_for_missing_tokens():
    # one position, K=2; teacher A keeps tokens 3 (logit 5) and 1 (2), teacher B keeps 1 (4) and 0 (1)
    a_ids, a_val = np.array([[3, 1]]), np.array([[5.0, 2.0]])
    b_ids, b_val = np.array([[1, 0]]), np.array([[4.0, 1.0]])
    ids, val = union_target([a_ids, b_ids], [a_val, b_val])
    got = {int(i): float(v) for i, v in zip(ids[0], val[0]) if v > -np.inf}
    # token 0: A's floor 2 and B's 1; token 1: 2 and 4; token 3: 5 and B's floor 1
    assert got == {0: 1.5, 1: 3.0, 3: 3.0}
    assert (val[0] == -np.inf).sum() == 1  # token 1 was kept by both: one copy is masked
    one_ids, one_val = union_target([a_ids], [a_val])
    assert one_ids.tolist() == [[3, 1]] and one_val.tolist() == [[5.0, 2.0]]


def test_lambada_scores_by_hand_with_a_multi_token_word():
    lp = lambda rows: np.log(np.asarray(rows, dtype=float))  # noqa: E731
    examples = [
        lp([[0.1, 0.7, 0.2]]),  # one-token word, greedy right: token 1
        lp([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]),  # two tokens (0, 2), both greedy: right
        lp([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3]]),  # two tokens (0, 2): second piece wrong
    ]
    targets = [np.array([1]), np.array([0, 2]), np.array([0, 2])]
    got = continuation_scores(examples, targets)
    assert got["accuracy"] == pytest.approx(2 / 3)
    nll = [-math.log(0.7), -math.log(0.6) - math.log(0.6), -math.log(0.6) - math.log(0.3)]
    assert got["perplexity"] == pytest.approx(math.exp(sum(nll) / 3))


def test_lambada_split_marks_the_whole_last_word(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text(json.dumps({"text": "the cat sat on the mattress"}) + "\n" + json.dumps({"text": "x"}) + "\n")
    with pytest.raises(UserError, match="l.jsonl:2: expected a text with a last word"):
        read_lambada(str(path))
    path.write_text(json.dumps({"text": "the cat sat on the mattress"}) + "\n")
    assert read_lambada(str(path)) == [("the cat sat on the", " mattress")]

    from tokenizers import ByteLevelBPETokenizer

    from bench.tasks.lm import lambada_split

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the cat sat on the mat"] * 5, vocab_size=270, min_frequency=1)
    split = lambada_split(read_lambada(str(path)), bpe._tokenizer, max_length=64)
    target_ids = split.ids[split.types == 1].tolist()
    assert len(target_ids) > 1  # "mattress" is several pieces for this tokenizer
    assert bpe._tokenizer.decode(target_ids) == " mattress"


def test_blocks_are_non_overlapping_windows():
    b = blocks(np.arange(10, dtype=np.int32), 3)
    assert b.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]


def _lm_spec(**task) -> dict:
    return {
        "name": "l",
        "teachers": 2,
        "task": {"name": "lm", "data": str(DATA / "lm-corpora" / "tinyshakespeare.txt"), **task},
        "teacher": {"model": "gpt"},
        "student": {"model": "gpt", "seed": 100},
        "method": {"name": "lm-kd"},
    }


def test_lm_spec_errors():
    with pytest.raises(SpecError, match="task.data.*expected a text file"):
        parse_sweep(_lm_spec(data="nope.txt"), "s.toml")
    with pytest.raises(SpecError, match="task.lambada"):
        parse_sweep(_lm_spec(lambada="nope.jsonl"), "s.toml")
    with pytest.raises(SpecError, match="method 'kd' expected a model other than 'gpt'"):
        parse_sweep({**_lm_spec(), "method": {"name": "kd"}}, "s.toml")
    with pytest.raises(SpecError, match="student.params.n_layers.*did you mean 'n_layer'"):
        parse_sweep({**_lm_spec(), "student": {"model": "gpt", "params": {"n_layers": 2}}}, "s.toml")
    assert parse_sweep(_lm_spec(), "s.toml").task.tokenizer == "bpe"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "lambada").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("topk", [16, 0])
def test_tiny_lm_sweep_end_to_end(project, topk):
    spec = (REPO / "sweeps" / "lm-toy.toml").read_text().replace('"../shared/data', json.dumps(str(DATA))[:-1])
    spec = spec.replace("teacher_topk = 16", f"teacher_topk = {topk}")
    (project / "lm-toy.toml").write_text(spec)
    proc = bench_cli("run", "lm-toy.toml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    recs = records(project / "results" / "lm-toy")
    assert len(recs) == 6 and all(r["status"] == "ok" and r["metric"] == "perplexity" for r in recs.values())
    for r in recs.values():
        assert set(r["scores"]) == {"val", "lambada"} and 0 <= r["scores"]["lambada"]["accuracy"] <= 1
        assert 0 < r["scores"]["val"]["bits_per_byte"] < 8 * 1.5  # compressed: well under 8 bits per byte
        lam = r["scores"]["lambada"]
        assert r["other_names"] == {"lambada_openai": {"acc": lam["accuracy"], "perplexity": lam["perplexity"]}}
        assert 1 < r["score"] < 1024  # better than... at most the vocabulary for a trained model
    for meta in (project / "teachers" / "lm").glob("*/meta.json"):  # each cache's own fidelity, k = 1
        rows = json.loads(meta.read_text())["cache_fidelity"]
        assert [r["temperature"] for r in rows] == [1.0, 2.0, 4.0]
        assert all(0 < r["grad_cosine"] <= 1 + 1e-9 and r["loss_ratio"] > 0 for r in rows)
        assert topk or all(r["grad_cosine"] > 0.9999 for r in rows)
    for r in recs.values():  # the cache's fidelity at the job's temperature, measured and recorded
        fidelity = r["teacher_work"]["cache_fidelity"]
        assert fidelity["temperature"] == r["config"]["method"]["params"]["temperature"]
        assert fidelity["grad_cosine"] == min(fidelity["init"]["grad_cosine"], fidelity["final"]["grad_cosine"])
        if topk:
            assert fidelity["cache"] == f"top-{topk} + tail bucket" and 0 < fidelity["grad_cosine"] <= 1 + 1e-9
        else:  # every logit kept: exact up to float16
            assert fidelity["cache"] == "all logits (float16)" and fidelity["grad_cosine"] > 0.9999
            assert abs(fidelity["final"]["loss_ratio"] - 1) < 1e-3
    import pandas as pd

    table = pd.read_csv(project / "reports" / "lm-toy" / "scores_by_grid.csv")
    assert table["model"].tolist()[0].startswith("teachers") and len(table) == 3
    summary = pd.read_csv(project / "reports" / "lm-toy" / "summary_by_k.csv")
    assert (summary["worst"] >= summary["best"]).all()  # perplexity: the worst case is the largest
    # the verdict reads perplexity the right way round: lower is better, whatever the direction
    verdict = (project / "reports" / "lm-toy" / "report.md").read_text().split("## Verdict")[1].split("##")[0]
    assert "higher (better)" not in verdict and "lower (worse)" not in verdict
    assert (
        "lm-eval's names of these scores: lambada_accuracy = lambada_openai/acc"
        in (project / "reports" / "lm-toy" / "report.md").read_text()
    )


def test_the_report_names_lm_evals_scores_beside_ours():
    """The report's names of lm-evaluation-harness (records carry them in other_names), derived
    from the task's own renaming, for the score table and the headline metric."""
    from bench.analysis.report import _metric_label, other_names

    columns = ["val_perplexity", "lambada_accuracy", "lambada_perplexity", "n_params", "n_runs"]
    assert other_names("lm", columns) == {
        "lambada_accuracy": "lambada_openai/acc",
        "lambada_perplexity": "lambada_openai/perplexity",
    }
    assert other_names("cola", ["dev_mcc", "dev_accuracy"]) == {} and other_names("gone", ["x_y"]) == {}
    record = {"score_split": "lambada", "metric": "accuracy", "config": {"task": {"name": "lm"}}}
    assert _metric_label(record) == "lambada accuracy (lm-eval: lambada_openai/acc)"
    assert _metric_label({**record, "score_split": "val", "metric": "perplexity"}) == "val perplexity"


def test_lm_only_task_fields_are_refused_elsewhere():
    spec = {
        "name": "d",
        "teachers": 2,
        "task": {"name": "digits", "lambada": "x.jsonl"},
        "teacher": {"model": "cnn"},
        "student": {"model": "mlp"},
    }
    with pytest.raises(SpecError, match="task.lambada.*only for task 'lm'"):
        parse_sweep(spec, "s.toml")


def test_tail_logit_keeps_the_tail_mass_at_t1():
    from bench.tasks.lm import tail_logit

    torch.manual_seed(1)
    logits = torch.randn(5, 50) * 3
    top = torch.topk(logits, 8, dim=-1)
    tail = tail_logit(logits, top.values)
    p = torch.softmax(logits, -1)
    true_tail = 1 - p.gather(1, top.indices).sum(-1)
    z = torch.logsumexp(logits, -1)
    torch.testing.assert_close(42 * torch.exp(tail - z), true_tail, rtol=1e-4, atol=1e-6)
    assert torch.isinf(tail_logit(logits, logits)).all()  # K = V: no tail


def test_token_kd_loss_with_a_tail_bucket_by_hand():
    # vocabulary 4; the teacher keeps tokens 0 and 1 (logits 2, 1); the 2 others share tail logit 0
    s = torch.tensor([[0.0, 0.0, 0.0, math.log(2.0)]])  # student p = (1/5, 1/5, 1/5, 2/5)
    ids, t, tail = torch.tensor([[0, 1]]), torch.tensor([[2.0, 1.0]]), torch.tensor([0.0])
    z = math.exp(2) + math.exp(1) + 2  # teacher p = (e^2, e, 2) / z on {0, 1, other}
    p_t = [math.exp(2) / z, math.e / z, 2 / z]
    p_s = [0.2, 0.2, 0.6]
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    got = token_kd_loss(s, ids, t, torch.tensor([0]), torch.ones(1), 1.0, 0.0, tail_logits=tail)
    assert got.item() == pytest.approx(kl, rel=1e-5)
    # without the bucket the target is renormalised on {0, 1}: a different, larger loss here
    dropped = token_kd_loss(s, ids, t, torch.tensor([0]), torch.ones(1), 1.0, 0.0)
    assert dropped.item() != pytest.approx(kl, rel=1e-3)
    # a full support leaves an empty bucket: plain KD, and finite gradients
    s2 = s.clone().requires_grad_(True)
    full = token_kd_loss(
        s2,
        torch.arange(4)[None],
        torch.tensor([[2.0, 1.0, 0.0, 0.0]]),
        torch.tensor([0]),
        torch.ones(1),
        2.0,
        0.3,
        tail_logits=torch.tensor([-math.inf]),
    )
    full.backward()
    assert torch.isfinite(s2.grad).all()
    assert full.item() == pytest.approx(
        kd_loss(s, torch.tensor([[2.0, 1.0, 0.0, 0.0]]), torch.tensor([0]), 2.0, 0.3).item(), rel=1e-5
    )


def test_cache_fidelity_by_hand():
    """V = 3, K = 1, a uniform student, T = 1: the cache keeps token 0 and the tail's total mass
    exactly, but not how the tail splits (p1 != p2), so the gradient on tokens 1 and 2 is off."""
    from bench.tasks.lm import cache_fidelity, tail_logit

    logits = torch.tensor([[2.0, 0.0, -2.0]])
    top = torch.topk(logits, 1, dim=-1)
    cache = {
        "topk_idx": top.indices.int().numpy(),
        "topk_val": top.values.half().numpy(),
        "tail_logit": tail_logit(logits, top.values).numpy(),
    }
    got = cache_fidelity([logits], [cache], torch.zeros(1, 3), 1.0)
    p = torch.softmax(logits, -1)[0].double()
    q = torch.full((3,), 1 / 3, dtype=torch.float64)
    exact_grad = q - p
    bucket = p[1] + p[2]
    cached_grad = torch.stack([q[0] - p[0], q[1] - bucket / 2, q[2] - bucket / 2])
    cos = float(exact_grad @ cached_grad / exact_grad.norm() / cached_grad.norm())
    assert got["grad_cosine"] == pytest.approx(cos, abs=1e-3)
    exact_kl = float((p * (p / q).log()).sum())
    cached_kl = float(p[0] * (p[0] / q[0]).log() + bucket * (bucket / (2 / 3)).log())
    assert got["loss_ratio"] == pytest.approx(cached_kl / exact_kl, abs=1e-3)
    assert got["grad_cosine"] < 0.999 and got["loss_ratio"] < 1


def test_cache_fidelity_is_exact_when_the_cache_keeps_every_logit():
    from bench.tasks.lm import cache_fidelity, tail_logit

    torch.manual_seed(0)
    teachers = [torch.randn(5, 7) * 3 for _ in range(2)]
    caches = []
    for t in teachers:
        top = torch.topk(t, 7, dim=-1)
        caches.append(
            {
                "topk_idx": top.indices.int().numpy(),
                "topk_val": top.values.half().numpy(),
                "tail_logit": tail_logit(t, top.values).numpy(),
            }
        )
    for temp in (1.0, 4.0):
        got = cache_fidelity([t.half().float() for t in teachers], caches, torch.randn(5, 7), temp)
        assert got["grad_cosine"] == pytest.approx(1.0, abs=1e-5) and got["loss_ratio"] == pytest.approx(1.0, abs=1e-4)


def test_dense_caches_give_the_exact_mean_target_and_do_not_mix_with_top_k():
    from bench.tasks.lm import kd_target

    rng = np.random.default_rng(0)
    dense = [{"logits": rng.normal(size=(3, 5, 7)).astype(np.float16)} for _ in range(3)]
    ids, mean, tail = kd_target(dense)
    assert ids is None and tail is None and mean.shape == (3, 5, 7)
    expected = np.mean([d["logits"].astype(np.float32) for d in dense], axis=0)
    np.testing.assert_allclose(mean.astype(np.float32), expected, atol=2e-3)  # float16 storage
    topk = {
        "topk_idx": np.zeros((3, 5, 1), np.int32),
        "topk_val": np.zeros((3, 5, 1), np.float16),
        "tail_logit": np.zeros((3, 5), np.float32),
    }
    with pytest.raises(ValueError, match="mix dense and top-K"):
        kd_target([dense[0], topk])


def test_token_bytes_add_up_to_the_text_and_bits_per_byte_by_hand(tmp_path):
    """Byte-level BPE: the bytes of a text's tokens add up to its UTF-8 length (non-ASCII too);
    a model that spreads its probability evenly over V tokens has bits per byte = n ln V / ln 2 / bytes."""
    import math

    import numpy as np
    import torch

    from bench.core.config import TaskSpec
    from bench.tasks.base import Split, TaskData
    from bench.tasks.lm import EOS, encode, evaluate_lm, load_lm_tokenizer, token_bytes

    text = "the cat sat on the mat.\nnaïve café — déjà vu\n" * 50
    tok = load_lm_tokenizer(TaskSpec(name="lm", vocab_size=300), text, tmp_path)
    per_token = token_bytes(tok)
    sample = "naïve café — the mat\n"
    assert int(per_token[encode(tok, sample)].sum()) == len(sample.encode("utf-8"))
    assert per_token[tok.token_to_id(EOS)] == 0

    class Uniform(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], x.shape[1] - 1, 300)  # as CausalLM: predicts tokens 2..n

    ids = np.stack([encode(tok, text)[:9], encode(tok, text)[9:18]])
    val = Split(labels=ids[:, 1:].astype(np.int64), x=ids)
    n_bytes = int(per_token[val.labels].sum())
    data = TaskData("lm", {"val": val}, None, ("val",), text_bytes={"val": n_bytes})
    got = evaluate_lm(data, Uniform(), torch.device("cpu"))["val"]
    assert got["perplexity"] == pytest.approx(300)
    assert got["bits_per_byte"] == pytest.approx(16 * math.log(300) / math.log(2) / n_bytes)
