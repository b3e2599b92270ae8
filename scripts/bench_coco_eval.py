"""COCO bbox evaluation speed: our `coco_metrics` (annotations and detection arrays in, conversion included)
against faster-coco-eval's own time and pycocotools' on the same records, and the numbers of all three.

    python scripts/bench_coco_eval.py                        # 1,000 images x 100 detections, 80 classes
    python scripts/bench_coco_eval.py --images 5000          # COCO val2017's size

The peers are timed as their users call them: a COCO object from an instances dict, `loadRes` of the result
records, evaluate, accumulate, summarize. Ours starts from what validation holds (Annotation objects and one
(K, 6) array per image) and builds those dicts itself, so its time includes the conversion.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import numpy as np
from machine import cpu_name, load_average

from detr_toolkit.data.annotations import Annotation
from detr_toolkit.engine.coco_metrics import STAT_NAMES, coco_detections, coco_ground_truth, coco_metrics


def make_records(images: int, detections: int, classes: int, seed: int
                 ) -> tuple[list[Annotation], list[np.ndarray]]:  # fmt: skip
    """COCO-like ground truth (1-20 objects an image, 7 on average, sizes small to large) and `detections` per
    image: the objects jittered (some classes wrong), scored 0.3-1, and the rest false alarms, scored 0-0.7."""
    rng = np.random.default_rng(seed)
    annotations, rows = [], []
    for index in range(images):
        height, width = int(rng.integers(320, 640)), 640
        count = int(np.clip(rng.poisson(7), 1, 20))
        size = np.exp(rng.uniform(np.log(8), np.log(300), (count, 2)))
        corner = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - size).clip(1)
        boxes = np.concatenate([corner, corner + size], 1)
        labels = rng.integers(0, classes, count)
        annotations.append(Annotation(Path(f"{index:06d}.jpg"), (height, width), boxes.astype(np.float32), labels))
        hits = boxes + rng.normal(0, 0.05, boxes.shape) * np.tile(size, 2)
        alarms = rng.uniform(0, 1, (detections - count, 4)) * [width, height, width, height]
        found = np.concatenate([hits, np.sort(alarms.reshape(-1, 2, 2), 1).reshape(-1, 4)])
        found_classes = np.concatenate([np.where(rng.random(count) < 0.8, labels, rng.integers(0, classes, count)),
                                        rng.integers(0, classes, detections - count)])  # fmt: skip
        scores = np.concatenate([rng.uniform(0.3, 1, count), rng.uniform(0, 0.7, detections - count)])
        rows.append(np.column_stack([found, scores, found_classes]).astype(np.float32))
    return annotations, rows


def peer(library: str, truth: dict, records: list[dict]) -> tuple[float, list[float]]:
    """(seconds, stats) of one library's COCOeval on an instances dict and result records."""
    if library == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Evaluation
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Evaluation
    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        ground_truth = COCO()
        ground_truth.dataset = truth
        ground_truth.createIndex()
        evaluation = Evaluation(ground_truth, ground_truth.loadRes(records), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        seconds = time.perf_counter() - started
    return seconds, [float(v) for v in evaluation.stats[: len(STAT_NAMES)]]


def best_of(repeats: int, run) -> tuple[float, list[float]]:
    results = [run() for _ in range(repeats)]
    return min(r[0] for r in results), results[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--detections", type=int, default=100, help="per image")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3, help="the best of this many runs counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    annotations, rows = make_records(args.images, args.detections, args.classes, args.seed)
    names = {k: f"class{k}" for k in range(args.classes)}
    print(f"CPU: {cpu_name()}")
    load_average("before the runs")
    print(f"{args.images} images, {sum(len(a.boxes) for a in annotations)} objects, {args.detections} detections an "
          f"image, {args.classes} classes; best of {args.repeats}")  # fmt: skip

    def ours() -> tuple[float, list[float]]:
        started = time.perf_counter()
        stats, _ = coco_metrics(annotations, rows, names)
        return time.perf_counter() - started, [stats[k] for k in STAT_NAMES]

    truth, records = coco_ground_truth(annotations, names), coco_detections(rows)
    timings = {
        "ours (coco_metrics)": best_of(args.repeats, ours),
        "faster-coco-eval": best_of(args.repeats, lambda: peer("faster-coco-eval", truth, records)),
        "pycocotools": best_of(1, lambda: peer("pycocotools", truth, records)),  # slow; one run
    }
    load_average("after the runs")
    reference = timings["faster-coco-eval"][0]
    print("| evaluator | seconds | / faster-coco-eval | mAP50-95 | mAP50 | max stat difference from pycocotools |")
    print("|---|---|---|---|---|---|")
    for name, (seconds, stats) in timings.items():
        difference = max(abs(a - b) for a, b in zip(stats, timings["pycocotools"][1]))
        print(f"| {name} | {seconds:.2f} | {seconds / reference:.2f}x | {stats[0]:.4f} | {stats[1]:.4f} | "
              f"{difference:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
