"""Which dataset a training `data=` names, and its splits: YOLO data.yaml, COCO data yaml, or an instances .json.

# COCO data yaml (paths relative to the yaml's folder)
format: coco
train: {instances: annotations/instances_train.json, images: train}
val: {instances: annotations/instances_val.json, images: val}
categories: [person, car]   # optional subset
max_images: 500             # optional subset
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import load_yaml
from ..errors import ConfigError, DatasetError
from ..settings import ValArgs
from .annotations import Annotation
from .coco import load_coco
from .yolo import load_yolo


def load_split(
    data: str | Path,
    split: str,
    on_error: str = "error",
    categories: Sequence[str | int] | None = None,
    max_images: int | None = None,
    images: str | Path | None = None,
) -> tuple[Sequence[Annotation], dict[int, str]]:
    """-> (annotations of `split`, class names). An instances .json serves every split (its images in `images`,
    default: the folder `images` beside it)."""
    data = Path(data)
    if not data.is_file():
        raise DatasetError(f"{data}: dataset file not found")
    if data.suffix == ".json":
        folder = Path(images) if images else data.parent / "images"
        return load_coco(data, folder, categories, None, max_images, on_error)
    spec = load_yaml(data)
    if spec.get("format", "yolo") == "yolo":
        return load_yolo(data, split, on_error)
    if spec["format"] != "coco":
        raise DatasetError(f"{data}: format {spec['format']!r} unknown (yolo or coco)")
    part = spec.get(split)
    if not isinstance(part, dict) or "instances" not in part or "images" not in part:
        raise DatasetError(f"{data}: split {split!r} needs {{instances: FILE.json, images: FOLDER}}")
    root = data.parent / str(spec.get("path", "."))
    subset = ValArgs.settings()  # the data yaml's subset keys are settings like any other: validated alike
    try:
        spec_categories = subset["categories"].parse("categories", spec.get("categories"))
        spec_max_images = subset["max_images"].parse("max_images", spec.get("max_images"))
    except ConfigError as error:
        raise DatasetError(f"{data}: {error}") from None
    return load_coco(
        root / str(part["instances"]),
        root / str(part["images"]),
        categories if categories is not None else spec_categories,
        None,
        max_images if max_images is not None else spec_max_images,
        on_error,
    )
