"""The CIFAR-10 arm: He et al. ResNets, the data loader, training views and the teacher targets
on them, the step schedule, and an end-to-end tiny sweep on the real images."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import bench_cli, records

from bench.core.config import TaskSpec, TrainSpec
from bench.core.errors import SpecError, UserError
from bench.models.nets import BasicBlock, CifarResNet
from bench.spec.load import parse_sweep
from bench.tasks.base import ALL_VIEWS, Split, crop_flip
from bench.tasks.cifar import CLASSES, cifar_arrays, load_cifar10, view_table
from bench.training.loop import _schedule, predict_logits, train

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10"


@pytest.mark.parametrize("depth,millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_resnet_parameter_counts_match_he_et_al(depth, millions):
    n = sum(p.numel() for p in CifarResNet(depth, 10).parameters())
    assert round(n / 1e6, 2 if depth < 110 else 1) == millions


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = BasicBlock(16, 32, stride=2, option_a=True)
    x = torch.randn(2, 16, 32, 32)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 16, 16)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])  # the 16 input channels, centred
    assert not s[:, :8].any() and not s[:, 24:].any()  # the 16 new channels are zeros
    assert block(x).shape == (2, 32, 16, 16)
    assert sum(p.numel() for p in BasicBlock(16, 16, 1, option_a=True).parameters()) == 2 * (9 * 16 * 16 + 2 * 16)
    assert torch.equal(BasicBlock(16, 16, 1, option_a=True).shortcut(x), x)  # identity where the shape is kept
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21, 10)


def test_crop_flip_by_hand():
    x = np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3) + 1
    centre = 0 * 81 + 4 * 9 + 4  # offset (4, 4) of the 4-pixel padding: the image itself
    assert np.array_equal(crop_flip(x, np.array([centre])), x)
    top_left = crop_flip(x, np.array([0]))  # offset (0, 0): 4 rows and columns of padding, then pixel (0, 0)
    assert top_left.sum() == 0
    shifted = crop_flip(x, np.array([4 * 9 + 5]))  # one column to the right
    assert shifted[0, 0].tolist() == [[2, 3, 0], [5, 6, 0], [8, 9, 0]]
    mirrored = crop_flip(x, np.array([81 + centre]))
    assert mirrored[0, 0].tolist() == [[3, 2, 1], [6, 5, 4], [9, 8, 7]]


def test_view_tables():
    assert view_table(5, 0, 0) is None
    full = view_table(3, ALL_VIEWS, 0)
    assert full.shape == (3, 162) and all(sorted(row) == list(range(162)) for row in full)
    some = view_table(50, 8, seed=1)
    assert some.shape == (50, 8) and all(len(set(row)) == 8 for row in some)
    assert np.array_equal(some, view_table(50, 8, seed=1)) and not np.array_equal(some, view_table(50, 8, seed=2))


def _image_split(n: int = 24, views: int = 3, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        labels=rng.integers(0, 10, n),
        x=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
        norm=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        views=view_table(n, views, seed),
    )


def test_cached_target_is_the_teacher_output_on_the_exact_view_the_student_sees():
    """The teacher cache holds one row per (example, view); the training loop hands the loss the
    row of the view it just drew, so target == teacher(that augmented batch)."""
    torch.manual_seed(0)
    split = _image_split()
    teacher = CifarResNet(8, 10).eval()
    cached = torch.from_numpy(predict_logits(teacher, split, torch.device("cpu"), batch_size=7))
    assert cached.shape == (24 * 3, 10)
    plain = predict_logits(teacher, Split(labels=split.labels, x=split.x, norm=split.norm), torch.device("cpu"))
    checked = []

    def loss_fn(model, batch, target, labels):
        with torch.no_grad():
            online = teacher(**batch)
        torch.testing.assert_close(cached[target], online, atol=1e-4, rtol=1e-4)
        checked.append((target.clone(), online))
        return model(**batch).logsumexp(1).mean()

    student = CifarResNet(8, 10)
    spec = TrainSpec(model="resnet8", epochs=3, batch_size=8, lr=0.01, optimizer="sgd")
    train(student, split, spec, seed=3, loss_fn=loss_fn, device=torch.device("cpu"))
    targets = torch.cat([t for t, _ in checked])
    assert len(checked) == 9 and len(set((targets % 3).tolist())) == 3  # every view number was drawn
    # an un-augmented target would be wrong: the views really change the teacher's output
    idx = targets // 3
    assert not np.allclose(plain[idx.numpy()], torch.cat([o for _, o in checked]).numpy(), atol=1e-3)


def test_step_schedule():
    spec = TrainSpec(model="resnet8", schedule="step", milestones=(0.5, 0.75), warmup_ratio=0.0)
    f = _schedule(spec, 100)
    assert [f(0), f(49), f(50), f(74), f(75), f(99)] == [1.0, 1.0, 0.1, 0.1, pytest.approx(0.01), pytest.approx(0.01)]
    warm = _schedule(TrainSpec(model="resnet8", schedule="step", warmup_ratio=0.1), 100)
    assert warm(0) == pytest.approx(0.1) and warm(9) == 1.0 and warm(60) == pytest.approx(0.1)
    flat = _schedule(TrainSpec(model="resnet8", schedule="constant", warmup_ratio=0.0), 100)
    assert [flat(0), flat(50), flat(99)] == [1.0, 1.0, 1.0]  # TinyBERT's ILD stage


def _write_tarball(root: Path, per_class: int = 2, bad_class: str | None = None) -> None:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with tarfile.open(root / "cifar10-jpg.tar.gz", "w:gz") as tar:
        for split in ("train", "test"):
            for c in (*CLASSES[:3], *([bad_class] if bad_class else [])):
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
                    info = tarfile.TarInfo(f"cifar10-jpg/{split}/{c}/{i:04d}.jpg")
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))


def test_loader_reads_the_tarball_once_into_the_cache(tmp_path):
    _write_tarball(tmp_path / "data")
    arrays = cifar_arrays(str(tmp_path / "data"), tmp_path / "cache")
    assert arrays["train/x"].shape == (6, 3, 32, 32) and arrays["train/x"].dtype == np.uint8
    assert sorted(arrays["test/y"].tolist()) == [0, 0, 1, 1, 2, 2]  # airplane, automobile, bird
    cached = list((tmp_path / "cache" / "cifar10").glob("*.npz"))
    assert len(cached) == 1 and not (tmp_path / "data" / "cifar10-jpg").exists()  # nothing unpacked
    (tmp_path / "data" / "cifar10-jpg.tar.gz").rename(tmp_path / "moved.tar.gz")
    spec = TaskSpec(name="cifar10", data=str(tmp_path / "data"), views=4)
    with pytest.raises(UserError, match="no CIFAR-10 train images"):
        load_cifar10(spec, tmp_path / "other-cache")
    (tmp_path / "moved.tar.gz").rename(tmp_path / "data" / "cifar10-jpg.tar.gz")
    data = load_cifar10(spec, tmp_path / "cache")
    assert data.eval_splits == ("test",) and data.splits["train"].n_views == 4
    assert data.splits["test"].views is None
    x = data.splits["train"].batch(np.arange(3), np.array([0, 1, 2]))["x"]
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32)


def test_loader_names_an_unknown_class_folder(tmp_path):
    _write_tarball(tmp_path / "data", per_class=1, bad_class="zebra")
    with pytest.raises(UserError, match="unknown CIFAR-10 class folder 'zebra'"):
        cifar_arrays(str(tmp_path / "data"), tmp_path / "cache")


def _spec(**task) -> dict:
    return {
        "name": "c",
        "teachers": 2,
        "task": {"name": "cifar10", **task},
        "teacher": {"model": "resnet20"},
        "student": {"model": "resnet8", "seed": 100},
    }


def test_spec_errors_for_views_and_optimizers(tmp_path):
    with pytest.raises(SpecError, match="task.views.*0 <= views <= 162"):
        parse_sweep(_spec(views=200), "s.toml")
    with pytest.raises(SpecError, match="task.views.*for task 'cifar10'"):
        parse_sweep(
            {
                **_spec(),
                "task": {"name": "digits", "views": 4},
                "teacher": {"model": "cnn"},
                "student": {"model": "mlp"},
            },
            "s.toml",
        )
    with pytest.raises(SpecError, match="teacher.optimizer.*did you mean 'sgd'"):
        parse_sweep({**_spec(), "teacher": {"model": "resnet20", "optimizer": "sdg"}}, "s.toml")
    with pytest.raises(SpecError, match="student.params.depth.*expected no params"):
        parse_sweep({**_spec(), "student": {"model": "resnet8", "params": {"depth": 3}}}, "s.toml")
    with pytest.raises(SpecError, match="student.milestones"):
        parse_sweep({**_spec(), "student": {"model": "resnet8", "milestones": [0.8, 0.5]}}, "s.toml")
    assert parse_sweep(_spec(views=162), "s.toml").task.views == 162


def test_paper_spec_plans_189_jobs():
    proc = bench_cli("plan", "sweeps/paper/resnet-cifar10.toml", "--json", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["total"] == 189 and plan["by_k"] == {"1": 18, "2": 45, "3": 60, "4": 45, "5": 18, "6": 3}


@pytest.mark.slow
@pytest.mark.skipif(not (CIFAR / "cifar10-jpg.tar.gz").is_file(), reason="../shared/data/cifar10 not present")
def test_tiny_cifar_sweep_end_to_end(project):
    spec = (REPO / "sweeps" / "cifar-toy.toml").read_text().replace('"../shared/data/cifar10"', json.dumps(str(CIFAR)))
    (project / "cifar-toy.toml").write_text(spec)
    proc = bench_cli("run", "cifar-toy.toml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    recs = records(project / "results" / "cifar-toy")
    assert len(recs) == 3 and all(r["status"] == "ok" and r["score_split"] == "test" for r in recs.values())
    assert all(r["teacher_work"]["logits"] == "cached per (example, training view)" for r in recs.values())
    assert all(0.0 <= r["score"] <= 1.0 for r in recs.values())
    # N=2, r=1: three combinations and three parameters, so the report refuses to guess
    assert "too small to tell anything about k" in (project / "reports" / "cifar-toy" / "report.md").read_text()
    teachers = sorted((project / "teachers" / "cifar10").iterdir())
    with np.load(teachers[0] / "outputs.npz") as z:
        assert z["train"].shape == (400 * 4, 10) and z["test"].shape == (200, 10)
    assert not list(project.rglob("*.jpg"))  # decoded into the cache, never unpacked
    shutil.rmtree(project / ".cache")
