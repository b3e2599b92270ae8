"""A COCO-train-sized instances file: how long until it is ready to train (ours against pycocotools' `COCO()`),
and whether the data-loader workers' memory stays flat over an epoch (copy-on-read of Python objects).

    python scripts/bench_coco_loading.py                     # 118,287 images, ~860k objects, as COCO train2017
    python scripts/bench_coco_loading.py --images 20000 --epoch-images 20000 --workers 2

The file is generated (image records, boxes and polygons of COCO's sizes and counts); its images are hard links
to a few small JPEGs of the recorded sizes, so that the folder costs no disk. The memory check iterates a
DataLoader over the training dataset (no model: what the workers hold is the question) and samples the
unique set size (USS: pages of its own, copied ones included) of the main process and each worker.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
from machine import cpu_name, load_average

SIZES = [(480, 640), (640, 480), (427, 640), (640, 427), (500, 375)]  # (height, width), COCO's commonest


def make_instances(root: Path, images: int, seed: int) -> Path:
    """Write root/instances_{images}_{seed}.json (objects per image ~ COCO's: mean 7.3, long tail) and root/images/."""
    rng = np.random.default_rng(seed)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    originals = []
    for height, width in SIZES:
        path = root / f"blank_{height}x{width}.jpg"
        cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))
        originals.append(path)
    records, objects = [], []
    counts = np.minimum(rng.geometric(1 / 7.3, images) - 1, 90)
    for index, count in enumerate(counts):
        kind = int(rng.integers(len(SIZES)))
        height, width = SIZES[kind]
        name = f"{index + 1:012d}.jpg"
        link = folder / name
        if not link.exists():
            os.link(originals[kind], link)
        records.append({"id": index + 1, "file_name": name, "height": height, "width": width, "license": 1,
                        "coco_url": f"http://images.cocodataset.org/{name}", "date_captured": ""})  # fmt: skip
        size = np.exp(rng.uniform(np.log(4), np.log(min(height, width) * 0.9), (count, 2)))
        corner = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - size)
        for (x, y), (w, h) in zip(corner.round(2).tolist(), size.round(2).tolist()):
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(6, 24))))
            polygon = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], 1)
            objects.append({"id": len(objects) + 1, "image_id": index + 1, "category_id": int(rng.integers(1, 91)),
                            "iscrowd": 0, "area": round(w * h * 0.7, 2), "bbox": [x, y, w, h],
                            "segmentation": [polygon.round(2).ravel().tolist()]})  # fmt: skip
    categories = [{"id": i, "name": f"class{i}", "supercategory": "thing"} for i in range(1, 91)]
    file = root / f"instances_{images}_{seed}.json"
    file.write_text(json.dumps({"info": {}, "licenses": [], "images": records, "annotations": objects,
                                "categories": categories}))  # fmt: skip
    return file


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=118287)
    parser.add_argument("--out", type=Path, default=Path("/tmp/coco_sized"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch-images", type=int, default=20000, help="images the memory check iterates")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=64)
    args = parser.parse_args()

    file = args.out / f"instances_{args.images}_{args.seed}.json"  # made once, kept for later runs
    if not file.is_file():
        started = time.perf_counter()
        make_instances(args.out, args.images, args.seed)
        print(f"generated {file} in {time.perf_counter() - started:.0f} s")
    print(f"CPU: {cpu_name()}; {file} ({file.stat().st_size / 2**20:.0f} MiB)")
    load_average("before loading")

    import contextlib
    import io

    from pycocotools.coco import COCO

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        COCO(str(file))
    theirs = time.perf_counter() - started

    from detr_toolkit.data.coco import load_coco
    from detr_toolkit.data.dataset import Collate, DetectionDataset, worker_start
    from detr_toolkit.engine.cpu_memory import process_memory

    started = time.perf_counter()
    annotations, names = load_coco(file, args.out / "images")
    dataset = DetectionDataset(annotations, names, args.imgsz, augment={})  # ready to train
    ours = time.perf_counter() - started
    objects = sum(len(annotations[i].boxes) for i in range(len(annotations)))
    print(f"{len(annotations)} images, {objects} objects, {len(names)} classes")
    print(f"| reader | seconds | / pycocotools |\n|---|---|---|\n| pycocotools COCO() | {theirs:.1f} | 1.00x |\n"
          f"| ours (load_coco + DetectionDataset) | {ours:.1f} | {ours / theirs:.2f}x |")  # fmt: skip

    import torch
    from torch.utils.data import DataLoader, Subset

    subset = Subset(dataset, range(min(args.epoch_images, len(dataset))))
    loader = DataLoader(
        subset, batch_size=32, num_workers=args.workers, collate_fn=Collate(), worker_init_fn=worker_start
    )  # as training's loader
    samples, batches = [], len(loader)
    torch.set_num_threads(1)
    for i, _ in enumerate(loader):
        if i in {batches // 10, batches // 2, batches - 1} or i % max(batches // 10, 1) == 0:
            workers = children(os.getpid())
            samples.append((i, process_memory(os.getpid())["uss"], [process_memory(w)["uss"] for w in workers]))
    print(f"\nUSS (MiB) over an epoch of {len(subset)} images, {args.workers} workers:")
    print("| batch | main | workers |\n|---|---|---|")
    for i, main_mib, worker_mib in samples:
        print(f"| {i} | {main_mib:.0f} | {', '.join(f'{m:.0f}' for m in worker_mib)} |")
    first, last = samples[1], samples[-1]  # from the second sample: the workers have started
    growth = [b - a for a, b in zip(first[2], last[2])]
    print(f"worker growth from batch {first[0]} to {last[0]}: {', '.join(f'{g:+.0f}' for g in growth)} MiB")
    load_average("after")


if __name__ == "__main__":
    main()
