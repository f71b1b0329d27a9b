"""Cost of correct KD targets under augmentation on CIFAR-10 (issue: CIFAR arm, item 3).

Three ways to give an augmenting student its k teachers' targets, timed in one run with the
harness's own training loop on real CIFAR-10 images:
  plain   cached logits of the UN-augmented images (cheap, but the wrong target for a cropped or
          mirrored view: the baseline the issue compares against);
  views   the harness's scheme: logits cached once per (example, view) over a finite view set;
          a student step looks its target up, exactly like plain;
  online  the k teachers run forward on every augmented batch (correct, costs k forwards a step).
Prints per-job student seconds and their ratios to plain, and the one-off cost of the view cache
per teacher (V forward passes over the training set) against that teacher's training.

    .venv/bin/python benchmarks/cifar_teacher_targets.py [--images 2000] [--views 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.core.config import TaskSpec, TrainSpec
from bench.models.losses import kd_loss, mean_teacher_logits
from bench.models.nets import CifarResNet
from bench.tasks.cifar import load_cifar10
from bench.training.loop import logits_loss, predict_logits, train

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--teacher", type=int, default=20, help="teacher ResNet depth")
    ap.add_argument("--student", type=int, default=8, help="student ResNet depth")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 6])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    data = load_cifar10(
        TaskSpec(name="cifar10", data=args.data, train_subset=args.images, views=args.views), REPO / ".cache" / "bench"
    )
    train_split = data.splits["train"]
    plain_split = type(train_split)(labels=train_split.labels, x=train_split.x, norm=train_split.norm)
    spec = TrainSpec(
        model=f"resnet{args.student}", epochs=args.epochs, batch_size=128, lr=0.05, optimizer="sgd", max_grad_norm=0.0
    )
    ce = logits_loss(lambda logits, idx, y: torch.nn.functional.cross_entropy(logits, y))

    teachers = []
    for i in range(max(args.k)):
        torch.manual_seed(i)
        teachers.append(CifarResNet(args.teacher, 10).eval())
    t0 = time.perf_counter()
    train(CifarResNet(args.teacher, 10), train_split, spec, 0, ce, dev)  # one teacher epoch, for scale
    teacher_epoch = (time.perf_counter() - t0) / args.epochs
    t0 = time.perf_counter()
    per_view = [predict_logits(teachers[0], train_split, dev)]
    view_cache = time.perf_counter() - t0
    per_view += [predict_logits(t, train_split, dev) for t in teachers[1:]]
    plain = [predict_logits(t, plain_split, dev) for t in teachers]

    def student_seconds(loss) -> float:
        torch.manual_seed(0)
        t = time.perf_counter()
        train(CifarResNet(args.student, 10), train_split, spec, 0, loss, dev)
        return time.perf_counter() - t

    print(
        f"CIFAR-10, {args.images} training images x {args.views} views, teachers resnet{args.teacher}, "
        f"student resnet{args.student}, {args.epochs} student epoch(s), {args.threads} thread(s)"
    )
    print(f"{'k':>2} {'plain s':>8} {'views s':>8} {'online s':>9} {'views/plain':>12} {'online/plain':>13}")
    for k in args.k:
        mean_plain = mean_teacher_logits(torch.stack([torch.from_numpy(p) for p in plain[:k]]))
        mean_views = mean_teacher_logits(torch.stack([torch.from_numpy(p) for p in per_view[:k]]))
        n_views = args.views

        def plain_loss(model, batch, target, y):
            return kd_loss(model(**batch), mean_plain[target // n_views], y, 4.0, 0.1)

        def view_loss(model, batch, target, y):
            return kd_loss(model(**batch), mean_views[target], y, 4.0, 0.1)

        def online_loss(model, batch, target, y):
            with torch.no_grad():
                t = mean_teacher_logits(torch.stack([teacher(**batch) for teacher in teachers[:k]]))
            return kd_loss(model(**batch), t, y, 4.0, 0.1)

        s_plain, s_views, s_online = (student_seconds(f) for f in (plain_loss, view_loss, online_loss))
        print(
            f"{k:>2} {s_plain:8.1f} {s_views:8.1f} {s_online:9.1f} {s_views / s_plain:12.2f} {s_online / s_plain:13.2f}"
        )
    print(
        f"view cache of one teacher ({args.views} views x {args.images} images): {view_cache:.1f} s "
        f"= {view_cache / teacher_epoch:.2f} teacher training epochs ({teacher_epoch:.1f} s each); "
        f"it is paid once per teacher and shared by every job that uses the teacher"
    )


if __name__ == "__main__":
    main()
