"""Memory over a long training run: the demo recipe (rtdetr-tiny, configs/train/shapes.yaml: 30 epochs) on the
generated shapes, the training process's resident memory (RSS) and its own pages (USS) sampled after every epoch.
A run whose memory grows epoch after epoch (a history of tensors kept, a cache without bound) is cut off by the
machine on a long run; after the second epoch (the first has the one-off allocations) it should stay flat.

    python scripts/bench_memory.py                       # 800 images, 30 epochs (about 20 minutes on 2 cores)
    python scripts/bench_memory.py --train 64 --epochs 5 # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from machine import cpu_name, load_average

from detr_toolkit import RTDETR
from detr_toolkit.data.synthetic import make_synthetic
from detr_toolkit.engine.cpu_memory import process_memory

ROOT = Path(__file__).resolve().parent.parent
SETTLED_FROM = 2  # epochs after which memory is compared (1-based): the first holds one-off allocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=800, help="training images (the demo's)")
    parser.add_argument("--val", type=int, default=100, help="validation images")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (the demo recipe's)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers (the recipe's)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    data = make_synthetic(work / "shapes", args.train, args.val)
    samples: list[tuple[int, float, dict[str, float]]] = []
    started = time.perf_counter()

    def sample(trainer) -> None:
        samples.append((trainer.epoch + 1, time.perf_counter() - started, process_memory()))

    model = RTDETR(ROOT / "configs" / "rtdetr-tiny.yaml")
    model.add_callback("on_fit_epoch_end", sample)
    load = load_average("before")
    model.train(cfg=str(ROOT / "configs" / "train" / "shapes.yaml"), data=str(data), epochs=args.epochs,
                workers=args.workers, project=str(work), name="run", plots=False, verbose=False)  # fmt: skip
    print(f"CPU: {cpu_name()}; load before {load[0]:.2f}; {args.train} images, {args.epochs} epochs, "
          f"{args.workers} workers; runs in {work}")  # fmt: skip
    print("| epoch | minutes | RSS MiB | USS MiB |\n|---|---|---|---|")
    for epoch, seconds, memory in samples:
        print(f"| {epoch} | {seconds / 60:.1f} | {memory['rss']:.0f} | {memory['uss']:.0f} |")
    settled = [memory["rss"] for epoch, _, memory in samples if epoch >= SETTLED_FROM]
    if settled:
        base = settled[0]
        drift = max(abs(rss - base) for rss in settled) / base
        print(f"RSS after epoch {SETTLED_FROM}: {min(settled):.0f}-{max(settled):.0f} MiB, at most {drift:.1%} from "
              f"epoch {SETTLED_FROM}'s {base:.0f} MiB (goal: within 5%)")  # fmt: skip


if __name__ == "__main__":
    main()
