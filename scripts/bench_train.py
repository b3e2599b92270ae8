"""Training speed and accuracy: ours vs ultralytics' RT-DETR trainer, same architecture, weights, data and epochs.

    python scripts/bench_train.py                      # rtdetr-tiny on 400 synthetic 96 px images, 5 epochs
    python scripts/bench_train.py --epochs 20 --train 800

Both start from the same random weights (ultralytics builds scripts/ultralytics-rtdetr-tiny.yaml, saves it, and
we import that checkpoint), train with AdamW at the same learning rate and batch, without validation during
training; then both final models are scored by the same COCO evaluator (ours) on the same val split.
Target (issue 4): ours >= 1.5x ultralytics' training images/s on CPU, and equal or better mAP.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=400, help="synthetic training images")
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes, both sides (0: in-process)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")

    from ultralytics import RTDETR as PeerRTDETR

    from detr_toolkit import RTDETR
    from detr_toolkit.data.synthetic import make_synthetic

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data = make_synthetic(work / "shapes", args.train, args.val, args.imgsz)
    torch.manual_seed(0)
    peer = PeerRTDETR(str(ROOT / "scripts" / "ultralytics-rtdetr-tiny.yaml"))
    start_weights = work / "start.pt"
    peer.save(str(start_weights))

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    peer.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, device="cpu",
               workers=args.workers, optimizer="AdamW", lr0=args.lr, amp=False, val=False, plots=False,
               project=str(work / "ultralytics"), name="run", verbose=False)  # fmt: skip
    peer_seconds = time.perf_counter() - started

    torch.set_num_threads(args.threads)  # ultralytics changes it
    ours = RTDETR(start_weights)
    started = time.perf_counter()
    run = ours.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=args.workers,
                     lr=args.lr, lr_backbone=args.lr, warmup_iters=100, val=False, plots=False,
                     project=str(work / "ours"), verbose=False)  # fmt: skip
    our_seconds = time.perf_counter() - started

    peer_final = RTDETR(work / "ultralytics" / "run" / "weights" / "last.pt")  # imported into ours for scoring
    images = args.train * args.epochs
    scores = {
        "ours": ours.val(data, imgsz=args.imgsz, verbose=False)["metrics"],
        "ultralytics": peer_final.val(data, imgsz=args.imgsz, verbose=False)["metrics"],
    }
    print(f"rtdetr-tiny, {args.train} synthetic images at {args.imgsz} px, {args.epochs} epochs, batch {args.batch}, "
          f"{args.threads} threads, CPU; runs in {work}")  # fmt: skip
    print(f"{'':12s} {'images/s':>9s} {'minutes':>8s} {'mAP50':>7s} {'mAP50-95':>9s}")
    for name, seconds in (("ours", our_seconds), ("ultralytics", peer_seconds)):
        stats = scores[name]
        print(f"{name:12s} {images / seconds:9.1f} {seconds / 60:8.2f} {stats['mAP50']:7.3f} {stats['mAP50-95']:9.3f}")
    print(f"speed ratio ours / ultralytics: {peer_seconds / our_seconds:.2f}x (target >= 1.5x); run folder {run}")


if __name__ == "__main__":
    main()
