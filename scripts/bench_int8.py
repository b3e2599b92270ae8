"""int8 against float32, both exported by us and run in onnxruntime: accuracy and speed, in one run.

    python scripts/bench_int8.py                  # the demo model on generated shapes, and rtdetr-l
    python scripts/bench_int8.py --skip-large     # the demo model only

Demo model (assets/rtdetr-tiny-shapes.safetensors, trained): calibrated on 64 generated training images, scored
on 200 generated val images (COCO mAP), timed per image over them.
rtdetr-l (built by ultralytics, perturbed to give confident detections; no trained weights are reachable offline):
calibrated on the two sample photos and generated 640-px images; with nothing to score it against, its int8
detections are scored against its float32 ones (those above conf 0.5 as the labels, COCO mAP50-95), and both
files are timed on bus.jpg. Target (issue 14): int8 <= 0.6x float32 time, mAP50-95 within 1 point.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the peers' checkpoint builder lives with the tests


def median_ms(model, sources, runs: int = 1) -> float:
    times = []
    for _ in range(runs):
        for source in sources:
            start = time.perf_counter()
            model.predict(source, verbose=False)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def graph_ms(model, size: int, batch: int, runs: int = 50) -> float:
    """Median time of the exported graph alone (no image decoding, resizing or post-processing), per image."""
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    model.exported(images)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.exported(images)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def demo(folder: Path) -> None:
    from detr_toolkit import RTDETR
    from detr_toolkit.data.synthetic import make_synthetic

    data = make_synthetic(folder / "shapes", train=64, val=200, seed=21)
    int8_file = RTDETR(ROOT / "assets" / "rtdetr-tiny-shapes.safetensors").export(
        int8=True, data=data, file=folder / "demo.onnx", val=False, dynamic=True
    )
    full, int8 = RTDETR(folder / "demo.onnx"), RTDETR(int8_file)
    scores = {name: model.val(data, verbose=False)["metrics"] for name, model in (("float32", full), ("int8", int8))}
    images = sorted((folder / "shapes" / "images" / "val").glob("*.jpg"))[:50]
    speed = {name: median_ms(model, images) for name, model in (("float32", full), ("int8", int8))}
    graph = {(name, batch): graph_ms(model, 96, batch) for name, model in (("float32", full), ("int8", int8))
             for batch in (1, 32)}  # fmt: skip
    print("demo model, 96 px, 200 generated val images")
    for name in ("float32", "int8"):
        s = scores[name]
        print(f"  {name:8s} mAP50-95 {s['mAP50-95']:.3f}  mAP50 {s['mAP50']:.3f}  predict {speed[name]:.1f} ms")
    print(f"  int8 / float32 time {speed['int8'] / speed['float32']:.2f}, "
          f"mAP50-95 {100 * (scores['int8']['mAP50-95'] - scores['float32']['mAP50-95']):+.1f} points")  # fmt: skip
    for batch in (1, 32):
        f, i = graph[("float32", batch)], graph[("int8", batch)]
        print(f"  graph alone, batch {batch:2d}: float32 {f:.2f} ms, int8 {i:.2f} ms per image, ratio {i / f:.2f}")


def large(folder: Path) -> None:
    import peers

    from detr_toolkit import RTDETR
    from detr_toolkit.data.annotations import Annotation
    from detr_toolkit.data.synthetic import make_synthetic
    from detr_toolkit.engine.coco_metrics import coco_metrics
    from detr_toolkit.engine.quantize import calibration_images, quantize_int8

    model = RTDETR(peers.ultralytics_checkpoint(folder, "rtdetr-l"))
    float_file = Path(model.export(file=folder / "rtdetr-l.onnx"))
    data = make_synthetic(folder / "shapes640", train=14, val=20, size=640, max_objects=8, seed=3)
    train_images = folder / "shapes640" / "images" / "train"
    for photo in ("bus.jpg", "zidane.jpg"):
        (train_images / photo).write_bytes((ROOT / "assets" / photo).read_bytes())
    (train_images.parent.parent / "labels" / "train" / "bus.txt").write_text("")
    (train_images.parent.parent / "labels" / "train" / "zidane.txt").write_text("")
    int8_file = quantize_int8(float_file, folder / "rtdetr-l-int8.onnx", calibration_images(data, 640, 16))
    full, int8 = RTDETR(float_file), RTDETR(int8_file)
    sources = [ROOT / "assets" / "bus.jpg", ROOT / "assets" / "zidane.jpg",
               *sorted((folder / "shapes640" / "images" / "val").glob("*.jpg"))]  # fmt: skip
    labels, detections = [], []
    for source in sources:
        reference = full.predict(source, conf=0.5, verbose=False)[0]
        boxes = reference.boxes
        labels.append(Annotation(image=Path(source), size=reference.orig_shape, boxes=boxes.xyxy.numpy(),
                                 classes=boxes.cls.numpy().astype(int)))  # fmt: skip
        detections.append(int8.predict(source, conf=0.001, verbose=False)[0].boxes.data.numpy())
    fidelity, _ = coco_metrics(labels, detections, full.names)
    count = sum(len(label.boxes) for label in labels)
    speed = {
        name: median_ms(m, [ROOT / "assets" / "bus.jpg"], runs=10) for name, m in (("float32", full), ("int8", int8))
    }
    print(f"rtdetr-l, 640 px ({count} float32 detections above 0.5 on {len(sources)} images as the labels)")
    print(f"  int8 scored against float32: mAP50-95 {fidelity['mAP50-95']:.3f}  mAP50 {fidelity['mAP50']:.3f}")
    print(f"  predict bus.jpg: float32 {speed['float32']:.0f} ms, int8 {speed['int8']:.0f} ms, "
          f"ratio {speed['int8'] / speed['float32']:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-large", action="store_true", help="the demo model only")
    args = parser.parse_args()
    print(f"{cpu_name()}, onnxruntime {onnxruntime.__version__}")
    folder = Path(tempfile.mkdtemp())
    demo(folder)
    if not args.skip_large:
        large(folder)


if __name__ == "__main__":
    main()
