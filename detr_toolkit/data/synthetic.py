"""A synthetic detection dataset that needs nothing from the internet: coloured shapes on textured backgrounds.

Classes: circle, square, triangle, star by default (any of SHAPES may be chosen); 1 to `max_objects` per image,
sizes from 8% to 40% of the image, random colours, on smooth noise backgrounds (or crops of real photos); filled,
or in the "outline" style (a second domain: a model pretrained on filled shapes meets outlined shapes of other
classes when fine-tuned).
With `segments`, each object is labelled by its outline polygon (instance segmentation) instead of its box.
Written in both formats side by side:

    root/data.yaml, root/images/{train,val}/*.jpg, root/labels/{train,val}/*.txt     (YOLO)
    root/coco.yaml, root/annotations/instances_{train,val}.json                       (COCO, same images)
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import yaml

from .aerial import photo_crop

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "cross"]
CLASSES = SHAPES[:4]
STYLES = ("filled", "outline")
OUTLINE_WIDTH = 0.3  # the stroke of the "outline" style, in shape radii


def _background(rng: np.random.Generator, size: int, photos: list[np.ndarray] | None = None) -> np.ndarray:
    """A muted base colour with smooth blotches and grain, so shapes stand out but not trivially; or, given
    `photos` (BGR), a random crop of one of them, colour-shifted."""
    if photos:
        return np.clip(photo_crop(rng, size, size, photos), 0, 255).astype(np.uint8)
    base = rng.integers(60, 200, 3).astype(np.int16)
    blotches = cv2.resize(
        rng.integers(-40, 41, (6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    image = base + blotches.astype(np.int16) + rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "cross":  # a plus sign: arms 1.25 r long, 0.4 r wide
        arm, half = 1.25 * r, 0.4 * r
        x = np.array([half, arm, arm, half, half, -half, -half, -arm, -arm, -half, -half, half])
        y = np.array([half, half, -half, -half, -arm, -arm, -half, -half, half, half, arm, arm])
        theta, radius = np.arctan2(y, x) + angle, np.hypot(x, y)
        return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], -1)
    if kind == "square":
        corners, radius = 4, [r * 1.2] * 4
    elif kind == "hexagon":
        corners, radius = 6, [r * 1.1] * 6
    elif kind == "triangle":
        corners, radius = 3, [r * 1.3] * 3
    else:  # star
        corners, radius = 10, [r * 1.3 if i % 2 == 0 else r * 0.55 for i in range(10)]
    theta = angle + np.arange(corners) * 2 * np.pi / corners
    return np.stack([cx + np.array(radius) * np.cos(theta), cy + np.array(radius) * np.sin(theta)], -1)


def shape_outline(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """The outline of a shape `draw_shape` draws: (K, 2) x y pixels (a circle's as a 32-gon)."""
    if kind == "circle":
        theta = np.arange(32) * 2 * np.pi / 32
        return np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], -1)
    return _polygon(kind, cx, cy, r, angle)


def draw_image(rng: np.random.Generator, size: int, max_objects: int, classes: list[str] = CLASSES,
               style: str = "filled", outlines: bool = False,
               photos: list[np.ndarray] | None = None) -> tuple[np.ndarray, list[tuple]]:  # fmt: skip
    """-> (BGR image, [(class index in `classes`, x1, y1, x2, y2)]) with objects overlapping little; with
    `outlines`, each object's outline (K, 2) (clipped to the image) follows its box; on crops of `photos` where
    given."""
    image = _background(rng, size, photos)
    objects: list[tuple] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(0.04, 0.2) * size
            cx, cy = rng.uniform(r * 1.3, size - r * 1.3, 2)
            if all(abs(cx - (o[1] + o[3]) / 2) > r + (o[3] - o[1]) / 2 or abs(cy - (o[2] + o[4]) / 2) > r +
                   (o[4] - o[2]) / 2 for o in objects):  # fmt: skip
                break
        else:
            continue
        cls = int(rng.integers(len(classes)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        angle = 0.0 if classes[cls] == "circle" else rng.uniform(0, 2 * np.pi)  # (a circle draws no angle)
        box = draw_shape(image, classes[cls], cx, cy, r, angle, colour, style)
        outline = np.clip(shape_outline(classes[cls], cx, cy, r, angle), 0, size)
        objects.append((cls, *box, outline) if outlines else (cls, *box))
    return image, objects


def draw_shape(image: np.ndarray, kind: str, cx: float, cy: float, r: float, angle: float,
               colour: tuple[int, int, int], style: str = "filled") -> tuple[float, float, float, float]:  # fmt: skip
    """Draw one shape of radius about `r` at (cx, cy) into `image` -> its box x1, y1, x2, y2 (clipped)."""
    if style not in STYLES:
        raise ValueError(f"style {style!r}: expected one of {', '.join(STYLES)}")
    thickness = -1 if style == "filled" else max(1, round(OUTLINE_WIDTH * r))
    if kind == "circle":
        cv2.circle(image, (round(cx), round(cy)), round(r), colour, thickness, cv2.LINE_AA)
        box = np.array([cx - r, cy - r, cx + r, cy + r])
    else:
        polygon = _polygon(kind, cx, cy, r, angle)
        points = np.round(polygon).astype(np.int32)
        if style == "filled":
            cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
        else:
            cv2.polylines(image, [points], True, colour, thickness, cv2.LINE_AA)
        box = np.concatenate([polygon.min(0), polygon.max(0)])
    if style == "outline":  # the stroke is centred on the outline
        box += np.array([-1, -1, 1, 1]) * thickness / 2
    height, width = image.shape[:2]
    x1, y1, x2, y2 = np.clip(box, 0, [width, height, width, height])
    return float(x1), float(y1), float(x2), float(y2)


def make_tracking_video(path: str | Path, frames: int = 60, size: int = 96, objects: int = 3, seed: int = 0,
                        fps: float = 10.0) -> list[tuple[int, int, float, float, float, float]]:  # fmt: skip
    """Write an mp4 of `objects` shapes moving on a still background, each along its own horizontal lane and
    bouncing off the sides -> its ground truth, one row per object and frame: (frame from 1, id from 1, x1, y1,
    x2, y2), as MOT Challenge ground truth lists them."""
    rng = np.random.default_rng(seed)
    background = _background(rng, size)
    lane = size / objects
    movers = []
    for index in range(objects):
        r = rng.uniform(0.09, 0.13) * size
        movers.append({
            "kind": CLASSES[index % len(CLASSES)], "r": r, "x": rng.uniform(r * 1.3, size - r * 1.3),
            "y": lane * (index + 0.5), "vx": rng.choice([-1, 1]) * rng.uniform(0.01, 0.03) * size,
            "angle": rng.uniform(0, 2 * np.pi), "colour": tuple(int(c) for c in rng.integers(0, 256, 3)),
        })  # fmt: skip
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    truth = []
    for frame in range(1, frames + 1):
        image = background.copy()
        for track_id, mover in enumerate(movers, start=1):
            box = draw_shape(image, mover["kind"], mover["x"], mover["y"], mover["r"], mover["angle"], mover["colour"])
            truth.append((frame, track_id, *box))
            mover["x"] += mover["vx"]
            if not mover["r"] * 1.3 <= mover["x"] <= size - mover["r"] * 1.3:
                mover["vx"] = -mover["vx"]
        writer.write(image)
    writer.release()
    return truth


def make_synthetic(root: str | Path, train: int = 800, val: int = 100, size: int = 96, max_objects: int = 4,
                   seed: int = 0, classes: list[str] = CLASSES, style: str = "filled",
                   segments: bool = False, photos: list[np.ndarray] | None = None) -> Path:  # fmt: skip
    """Write the dataset of `classes` (of SHAPES) drawn in `style` under `root`; returns the YOLO data.yaml
    (coco.yaml sits beside it). `segments`: objects labelled by their outlines (YOLO-seg rows, COCO polygons).
    `photos` (BGR images): backgrounds cropped from them instead of generated ones."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in enumerate(classes)]}
        for index in range(count):
            image, objects = draw_image(rng, size, max_objects, classes, style, outlines=True, photos=photos)
            name = f"{split}_{index:05d}.jpg"
            cv2.imwrite(str(root / "images" / split / name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines = [f"{c} " + (" ".join(f"{v / size:.6f}" for v in outline.ravel()) if segments else
                                f"{(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} {(x2 - x1) / size:.6f} "
                                f"{(y2 - y1) / size:.6f}") for c, x1, y1, x2, y2, outline in objects]  # fmt: skip
            (root / "labels" / split / name.replace(".jpg", ".txt")).write_text("\n".join(lines) + "\n")
            coco["images"].append({"id": index, "file_name": name, "height": size, "width": size})
            for c, x1, y1, x2, y2, outline in objects:
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": index, "category_id": c, "iscrowd": 0,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                    **({"segmentation": [outline.round(2).ravel().tolist()]} if segments else {}),
                })  # fmt: skip
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    data = root / "data.yaml"
    # No `path` key: ultralytics then resolves the folders against this file's folder, as we do.
    data.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": list(classes)}))
    (root / "coco.yaml").write_text(yaml.safe_dump({
        "format": "coco",
        "train": {"instances": "annotations/instances_train.json", "images": "images/train"},
        "val": {"instances": "annotations/instances_val.json", "images": "images/val"},
    }, sort_keys=False))  # fmt: skip
    return data
