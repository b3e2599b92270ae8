"""Small-data training: ours (a training recipe) vs ultralytics' YOLOv8n from scratch, at equal wall-time budgets,
on two kinds of generated aerial dataset (detr_toolkit/data/aerial.py): "dense" (tiles of 6-19 small objects)
and "medium" (frames of 1-6 objects of 45-210 px).

    python scripts/bench_small_data.py                               # both kinds, 5, 15 and 45 minutes per side
    python scripts/bench_small_data.py --kinds medium --budgets 5 15
    python scripts/bench_small_data.py --data-only --out /tmp/aerial --samples /tmp/aerial_samples   # look first
    python scripts/bench_small_data.py --budgets 0.5 --train 8 --val 3 --kinds medium   # smoke test

By default the two sides train side by side, each in a process of its own pinned to a core of its own (`taskset`)
with one thread; `--sequential` runs them one after the other on the whole idle CPU instead, `--threads` each.
Each budget is a run of its own (`time=` in hours, ultralytics' and ours: the schedule fits the budget). Both
sides are scored at the end by the same COCO evaluator (detr_toolkit.engine.coco_metrics) on the same val labels,
as our loader reads them, both at the kind's input size (aerial.KINDS: 224 px dense, 192 px medium); both
trainers pick their best weights by val mAP on that split. The curves (one PNG per kind,
assets/benchmarks/small-data-KIND.png) plot each epoch's val mAP50-95 as
each trainer's own validation computed it against the wall minutes its results.csv records.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from machine import cpu_name, load_average, settle
from run_curve import curve

from detr_toolkit.data.aerial import CLASSES, KINDS, make_aerial, save_samples

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("yolo", "ours")
LABELS = {"yolo": "YOLOv8n", "ours": "ours"}


def load_photos() -> list[np.ndarray]:
    """The real photos shipped with ultralytics (bus.jpg, zidane.jpg) and in the repository's assets/: train
    backgrounds."""
    folders = [ROOT / "assets"]
    spec = importlib.util.find_spec("ultralytics")  # not imported: that would set OpenCV's threads to 0
    if spec and spec.origin:
        folders.insert(0, Path(spec.origin).parent / "assets")
    photos = {}
    for folder in folders:
        for path in sorted(folder.glob("*.jpg")) if folder.is_dir() else []:
            image = cv2.imread(str(path))
            if image is not None:
                photos.setdefault(path.name, image)
    return list(photos.values())


# --- the two trainers (each in a process of its own) ----------------------------------------------------------


def run_yolo(args: argparse.Namespace, data_yaml: Path, work: Path) -> dict:
    import torch
    import ultralytics.data.utils
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS, torch_utils

    from detr_toolkit.data.splits import load_split
    from detr_toolkit.engine.coco_metrics import coco_metrics

    torch_utils.NUM_THREADS = args.threads  # select_device() sets torch's threads to this
    # ultralytics logs to MLflow wherever mlflow is installed, into the working directory (mlflow.db, mlruns/), as
    # ours does only when asked: off for this process, without saving that to the user's ultralytics settings file
    dict.__setitem__(SETTINGS, "mlflow", False)
    ultralytics.data.utils.check_font = lambda *a, **k: None  # no font download attempt (plots are off)
    torch.manual_seed(args.seed)
    model = YOLO("yolov8n.yaml")  # random weights; nothing downloaded
    load_before = load_average("before YOLOv8n")
    started = time.perf_counter()
    model.train(data=str(data_yaml), time=args.minutes / 60, imgsz=args.imgsz, batch=args.batch, device="cpu",
                workers=0, amp=False, plots=False, project=str(work), name="yolo", exist_ok=True, verbose=False,
                seed=args.seed, pretrained=False)  # fmt: skip
    seconds = time.perf_counter() - started
    load_after = load_average("after YOLOv8n")
    run = Path(model.trainer.save_dir)
    best = run / "weights" / "best.pt"
    trained = YOLO(str(best if best.is_file() else run / "weights" / "last.pt"))
    annotations, names = load_split(str(data_yaml), "val")
    detections = []
    for annotation in annotations:
        boxes = trained.predict(str(annotation.image), conf=0.001, iou=0.7, max_det=300, imgsz=args.imgsz,
                                device="cpu", verbose=False)[0].boxes  # fmt: skip
        detections.append(np.concatenate([boxes.xyxy.numpy(), boxes.conf.numpy()[:, None],
                                          boxes.cls.numpy()[:, None]], 1).astype(np.float32))  # fmt: skip
    stats, _ = coco_metrics(annotations, detections, names)
    points = curve(run, "metrics/mAP50-95(B)")
    return {"epochs": len(points), "seconds": seconds, "stats": stats, "curve": points,
            "threads": torch.get_num_threads(), "load": (load_before[0], load_after[0])}  # fmt: skip


def run_ours(args: argparse.Namespace, data_yaml: Path, work: Path) -> dict:
    from detr_toolkit import RTDETR

    recipe = ROOT / args.recipe if (ROOT / args.recipe).is_file() else Path(args.recipe)
    model_name = (yaml.safe_load(recipe.read_text()) or {}).get("model") or args.model
    model = RTDETR(ROOT / "configs" / model_name if (ROOT / "configs" / model_name).is_file() else model_name)
    load_before = load_average("before ours")
    started = time.perf_counter()
    run = model.train(cfg=str(recipe), data=str(data_yaml), time=args.minutes / 60, imgsz=args.imgsz,
                      threads=args.threads, seed=args.seed, project=str(work), name="ours", exist_ok=True,
                      plots=False, verbose=args.verbose)  # fmt: skip
    seconds = time.perf_counter() - started
    load_after = load_average("after ours")
    stats = model.val(str(data_yaml), imgsz=args.imgsz, threads=args.threads, verbose=False)["metrics"]
    points = curve(Path(run), "mAP50-95")
    return {"epochs": len(points), "seconds": seconds, "stats": stats, "curve": points, "threads": args.threads,
            "load": (load_before[0], load_after[0]), "model": Path(model_name).stem}  # fmt: skip


def train_side(args: argparse.Namespace) -> None:
    """The child process of one side: train, score, write the result as JSON to --result."""
    os.environ["YOLO_OFFLINE"] = "1"
    result = {"yolo": run_yolo, "ours": run_ours}[args.only](args, Path(args.data), Path(args.out))
    Path(args.result).write_text(json.dumps(result))


# --- the parent: data, sides, table, plots ---------------------------------------------------------------------


def side_command(args: argparse.Namespace, side: str, data_yaml: Path, work: Path, minutes: float, threads: int
                 ) -> list[str]:  # fmt: skip
    return [sys.executable, __file__, "--only", side, "--data", str(data_yaml), "--out", str(work),
            "--result", str(work / f"{side}.json"), "--minutes", str(minutes), "--threads", str(threads),
            "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--seed", str(args.seed), "--recipe", args.recipe,
            "--model", args.model] + (["--verbose"] if args.verbose else [])  # fmt: skip


def run_budget(args: argparse.Namespace, data_yaml: Path, work: Path, minutes: float) -> dict[str, dict]:
    """Both sides for one budget: side by side on a core each, or one after the other; -> side -> result."""
    work.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "OMP_NUM_THREADS": str(1 if not args.sequential else args.threads)}
    if args.sequential:
        for index, side in enumerate(SIDES):
            if index:
                settle(args.cooldown)
            subprocess.run(side_command(args, side, data_yaml, work, minutes, args.threads), check=True,
                           env=environment)  # fmt: skip
    else:
        cores = sorted(os.sched_getaffinity(0))[: len(SIDES)]
        processes = [
            subprocess.Popen(["taskset", "-c", str(core), *side_command(args, side, data_yaml, work, minutes, 1)],
                             env=environment, stdout=(work / f"{side}.log").open("w"), stderr=subprocess.STDOUT)
            for side, core in zip(SIDES, cores)
        ]  # fmt: skip
        for side, process in zip(SIDES, processes):
            if process.wait():
                sys.exit(f"{side} failed: see {work / f'{side}.log'}")
    return {side: json.loads((work / f"{side}.json").read_text()) for side in SIDES}


def plot(kind: str, results: dict[float, dict[str, dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    colours = {"yolo": "tab:orange", "ours": "tab:blue"}
    for minutes, sides in sorted(results.items()):
        for side, result in sides.items():
            points = result["curve"]
            label = f"{LABELS[side]}, {minutes:g} min"
            axis.plot([p[0] for p in points], [p[1] for p in points], color=colours[side], alpha=0.35 + 0.65 *
                      minutes / max(results), linewidth=1.2, label=label)  # fmt: skip
            axis.plot([result["seconds"] / 60], [result["stats"]["mAP50-95"]], "o", color=colours[side])
    axis.set(xlabel="wall minutes", ylabel="val mAP50-95", title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.text(0.01, 0.01, "lines: each epoch's own val; dots: the final weights, one COCO evaluator", fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[5, 15, 45], help="wall minutes per side")
    parser.add_argument("--train", type=int, default=400, help="training images")
    parser.add_argument("--val", type=int, default=100, help="validation images")
    parser.add_argument("--seed", type=int, default=0, help="dataset and training seed")
    parser.add_argument("--imgsz", type=int, default=None, help="both sides' size (default: the kind's)")
    parser.add_argument("--batch", type=int, default=16, help="YOLOv8n batch (ours: the recipe's)")
    parser.add_argument("--sequential", action="store_true", help="one side after the other on all cores")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per side (--sequential)")
    parser.add_argument("--recipe", default="configs/train/small-data.yaml", help="our training recipe")
    parser.add_argument("--model", default="rtdetr-tiny.yaml", help="our model if the recipe names none (`model:`)")
    parser.add_argument("--cooldown", type=float, default=90, help="most seconds to wait for the load to settle "
                        "between sequential sides")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--samples", type=Path, default=None, help="also save 2 images of each split here")
    parser.add_argument("--data-only", action="store_true", help="write the datasets (and samples), train nothing")
    parser.add_argument("--plots", type=Path, default=ROOT / "assets" / "benchmarks", help="folder of the PNGs")
    parser.add_argument("--verbose", action="store_true", help="our trainer's progress output")
    parser.add_argument("--only", choices=SIDES, help=argparse.SUPPRESS)  # a child process: one side
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    recipe = ROOT / args.recipe if (ROOT / args.recipe).is_file() else Path(args.recipe)
    if not recipe.is_file():
        sys.exit(f"recipe {args.recipe} not found")
    if args.only:
        return train_side(args)

    work = args.out or Path(tempfile.mkdtemp(prefix="bench_small_data_"))
    photos = load_photos()
    datasets = {}
    for kind in args.kinds:
        started = time.perf_counter()
        datasets[kind] = make_aerial(work / kind / "data", args.train, args.val, args.seed, kind, photos)
        counts = {split: sum(len(f.read_text().splitlines()) for f in (work / kind / "data" / "labels" / split)
                             .glob("*.txt")) for split in ("train", "val")}  # fmt: skip
        print(
            f"{kind}: {args.train} train images ({counts['train']} objects), {args.val} val images "
            f"({counts['val']} objects), {len(CLASSES)} classes; generated in {time.perf_counter() - started:.0f} s"
        )
        if args.samples:
            save_samples(datasets[kind], args.samples / kind, 2)
    if args.data_only:
        return

    mode = f"sequential, {args.threads} threads each" if args.sequential else "side by side, a core and a thread each"
    print(f"CPU: {cpu_name()}; {mode}; runs in {work}")
    table = []
    for kind, data_yaml in datasets.items():
        results = {}
        sized = argparse.Namespace(**{**vars(args), "imgsz": args.imgsz or KINDS[kind].imgsz})  # both sides'
        for minutes in args.budgets:
            print(f"--- {kind}, {minutes:g} minutes per side, {sized.imgsz} px")
            results[minutes] = run_budget(sized, data_yaml, work / kind / f"{minutes:g}min", minutes)
            for side, result in results[minutes].items():
                stats = result["stats"]
                name = LABELS[side] + (f" ({result['model']}, {recipe.name})" if side == "ours" else "")
                table.append(
                    f"| {kind} | {minutes:g} | {name} | {result['epochs']} | {result['seconds']:.0f} | "
                    f"{stats['mAP50']:.3f} | {stats['mAP50-95']:.3f} | {result['load'][0]:.2f} |"
                )
                print(table[-1])
        plot(kind, results, args.plots / f"small-data-{kind}.png", f"{kind}: {args.train} training images, "
             f"{sized.imgsz} px, from scratch")  # fmt: skip

    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}\nCPU: {cpu_name()}; {mode}")
    print(
        "| kind | minutes | model | epochs | wall s | mAP50 | mAP50-95 | load before |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(table))


if __name__ == "__main__":
    main()
