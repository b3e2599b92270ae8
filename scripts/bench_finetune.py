"""Fine-tuning, proven: a model pretrained on a larger generated set, fine-tuned on a small set of other classes in
another style, against the same model from scratch, at equal wall time; mAP50-95 against wall minutes for both.

    python scripts/bench_finetune.py                           # 2,000 filled shapes -> 120 outlined hexagons, crosses
    python scripts/bench_finetune.py --pretrain-minutes 20 --minutes 8
    python scripts/bench_finetune.py --pretrained runs/pretrain/weights/best.safetensors   # skip pretraining

The path of a user who starts from published weights (`rtdetrv2-s.pth`, `dfine-s.pth`) on a few hundred images of
their own: the class heads are re-initialised for the new classes, everything else is kept. Pretraining: rtdetr-tiny
on SHAPES' circles, squares, triangles and stars, filled (detr_toolkit/data/synthetic.py). Fine-tuning set:
hexagons and crosses drawn as outlines, classes and a style the pretraining never saw. Each side trains with the
recipe a user would pick for it (fine-tune.yaml: the backbone at a tenth of the rate; small-data.yaml from scratch),
at the same `time=` budget, one after the other on an otherwise idle CPU; each epoch's val mAP and wall time come
from its results.csv. Target (issue 23): fine-tuned far above from scratch at every budget.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from machine import cpu_name, load_average, settle
from run_curve import curve

ROOT = Path(__file__).resolve().parent.parent
FINE_TUNING_CLASSES = ["hexagon", "cross"]


def train(start: str | Path, recipe: str | None, data: Path, minutes: float, name: str, work: Path,
          args: argparse.Namespace) -> Path:  # fmt: skip
    """Train `start` (weights or a model YAML) on `data` for `minutes` with `recipe`'s settings; -> the run."""
    from detr_toolkit import RTDETR

    load_average(f"before {name}")
    run = RTDETR(start).train(cfg=recipe and str(ROOT / recipe), data=str(data), time=minutes / 60, batch=args.batch,
                              imgsz=args.imgsz, seed=args.seed, project=str(work), name=name, exist_ok=True,
                              plots=False)  # fmt: skip
    load_average(f"after {name}")
    return Path(run)


def plot(curves: dict[str, list[tuple[float, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        axis.plot([p[0] for p in points], [p[2] for p in points], marker="o", markersize=3, label=label)
    axis.set(xlabel="wall minutes (training and validation)", ylabel="val mAP50-95",
             title=f"fine-tuning vs from scratch ({', '.join(FINE_TUNING_CLASSES)}, outlined)")  # fmt: skip
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-images", type=int, default=2000)
    parser.add_argument("--pretrain-minutes", type=float, default=12)
    parser.add_argument("--pretrained", help="weights to fine-tune (skips pretraining)")
    parser.add_argument("--train", type=int, default=120, help="fine-tuning set's training images")
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--minutes", type=float, default=5, help="wall time of each fine-tuning side")
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-cfg", default="configs/train/shapes.yaml", help="pretraining recipe")
    parser.add_argument("--scratch-cfg", default="configs/train/small-data.yaml", help="from-scratch side's recipe")
    parser.add_argument("--finetune-cfg", default="configs/train/fine-tune.yaml", help="fine-tuned side's recipe")
    parser.add_argument("--plot", type=Path, default=ROOT / "assets" / "benchmarks" / "finetune.png")
    parser.add_argument("--work", type=Path, help="folder for data and runs (default: a temporary one)")
    args = parser.parse_args()

    from detr_toolkit.data.synthetic import CLASSES, make_synthetic

    print(f"CPU: {cpu_name()}")
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        pretrained = args.pretrained
        if pretrained is None:
            data = make_synthetic(work / "pretrain", train=args.pretrain_images, val=100, size=args.imgsz,
                                  classes=CLASSES, seed=args.seed)  # fmt: skip
            model = ROOT / "configs" / "rtdetr-tiny.yaml"
            run = train(model, args.pretrain_cfg, data, args.pretrain_minutes, "pretrain", work, args)
            pretrained = run / "weights" / "best.safetensors"
            settle(90)
        data = make_synthetic(work / "small", train=args.train, val=args.val, size=args.imgsz,
                              classes=FINE_TUNING_CLASSES, style="outline", seed=args.seed + 1)  # fmt: skip
        curves = {}
        sides = {"fine-tuned": (pretrained, args.finetune_cfg),
                 "from scratch": (ROOT / "configs" / "rtdetr-tiny.yaml", args.scratch_cfg)}  # fmt: skip
        for label, (start, recipe) in sides.items():
            curves[label] = curve(
                train(start, recipe, data, args.minutes, label.replace(" ", "-"), work, args), "mAP50", "mAP50-95"
            )
            settle(90)

    print(
        f"\n| rtdetr-tiny, {args.train} images of {', '.join(FINE_TUNING_CLASSES)}, {args.imgsz} px | epochs | "
        "minutes | mAP50 | mAP50-95 |\n|---|---|---|---|---|"
    )
    for label, points in curves.items():
        minutes, map50, map50_95 = points[-1]
        print(f"| {label} | {len(points)} | {minutes:.1f} | {map50:.3f} | {map50_95:.3f} |")
    for label, points in curves.items():
        print(f"{label}: " + "  ".join(f"{m:.1f} min {ap:.3f}" for m, _, ap in points))
    plot(curves, args.plot)


if __name__ == "__main__":
    main()
