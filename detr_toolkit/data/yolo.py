"""YOLO-format datasets, as ultralytics lays them out: a data.yaml naming image folders (or list files) and
class names; one `labels/<name>.txt` beside each `images/<name>.jpg` with lines `class cx cy w h` (0..1), or
`class x1 y1 x2 y2 ... xn yn` (0..1): an object's outline (ultralytics' segmentation labels), kept as its polygon.

    path: datasets/shapes     # root (relative to the yaml's folder)
    train: images/train       # folder, list file of image paths, or a list of either
    val: images/val
    names: {0: circle, 1: square}
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..config import class_names, load_yaml
from ..errors import DatasetError, DetrToolkitError
from .annotations import Annotation, LabelChecker, image_size
from .images import IMAGE_SUFFIXES


def dataset_names(data: dict, where: Path) -> dict[int, str]:
    """The data yaml's `names` (a list, or a mapping of the indices 0..n-1) -> {index: name}."""
    names = data.get("names")
    if not isinstance(names, (list, dict)) or not names:
        raise DatasetError(f"{where}: needs `names` (a list or {{index: name}} mapping of the classes)")
    try:
        return class_names(names, len(names), str(where))
    except DetrToolkitError as error:
        raise DatasetError(str(error)) from None


def read_text(path: Path) -> str:
    """A text file as written by any usual tool: UTF-8 (with or without a BOM) or UTF-16 with a BOM; DatasetError
    naming the file for anything else (a binary file where text belongs)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror})") from None
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file (binary, or an encoding other than UTF-8/UTF-16)") from None
    if "\x00" in text:
        raise DatasetError(f"{path}: not a text file (it holds NUL bytes)")
    return text


def image_files(entry: str | list, root: Path, where: Path) -> list[Path]:
    """The images of a split entry: folders (searched recursively), list files, or a list of them."""
    files: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        path = (root / str(item)).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix == ".txt":
            lines = [line.strip() for line in read_text(path).splitlines() if line.strip()]
            files += [(path.parent / line).resolve() if not Path(line).is_absolute() else Path(line) for line in lines]
        else:
            raise DatasetError(f"{where}: split entry {item!r} -> {path} is neither a folder nor a list file")
    if not files:
        raise DatasetError(f"{where}: no images found for split entry {entry!r}")
    return files


def label_file(image: Path) -> Path:
    """images/a/b.jpg -> labels/a/b.txt (the last `images` folder of the path becomes `labels`)."""
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if index is None:
        return image.with_suffix(".txt")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _row_box(values: list[float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A label row's values after the class -> pixel box x1 y1 x2 y2: `cx cy w h`, or a polygon `x1 y1 x2 y2 ...`
    (ultralytics' segmentation labels) by its bounding box."""
    height, width = size
    if len(values) == 4:
        cx, cy, w, h = values
        return (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
    xs, ys = values[0::2], values[1::2]
    return min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height


def read_labels(path: Path, size: tuple[int, int], checker: LabelChecker
                ) -> tuple[np.ndarray, np.ndarray, list[list[np.ndarray]] | None]:  # fmt: skip
    """A YOLO label file -> (boxes (N, 4) xyxy pixels, classes (N,), segments); no file means no objects.

    A row is `class cx cy w h` (normalised), or `class x1 y1 x2 y2 ... xn yn` (a polygon of 3 or more points,
    as ultralytics' segmentation labels are), which becomes the polygon's box, the polygon (in pixels) its segment.
    segments: per box, [polygon] or [] (a box row), None when the file has no polygon rows.
    """
    boxes, classes, segments = [], [], []
    if not path.exists():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), None
    if not path.is_file():  # a folder or a FIFO where the labels belong: not "no objects"
        raise DatasetError(f"{path}: not a label file (a folder or a special file)")
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
                raise ValueError(
                    f"expected 'class cx cy w h' or a polygon 'class x1 y1 ... xn yn', got {len(fields)} values"
                )
            number_class = float(fields[0])
            if not number_class.is_integer():
                raise ValueError(f"class {fields[0]} is not an integer")
            values = [float(v) for v in fields[1:]]
            if not all(math.isfinite(v) for v in values):
                raise ValueError("a value is not a finite number")
        except ValueError as error:
            checker.problem(where, f"malformed label line {line.strip()[:80]!r} ({error})")
            continue
        cls, box = int(number_class), _row_box(values, size)
        if checker.box_ok(where, cls, box, size):
            boxes.append(box)
            classes.append(cls)
            polygon = np.asarray(values, np.float32).reshape(-1, 2) * np.array(size[::-1], np.float32)
            segments.append([polygon] if len(values) > 4 else [])
    has_polygons = any(segments)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64),
            segments if has_polygons else None)  # fmt: skip


def load_yolo(data_yaml: str | Path, split: str = "train", on_error: str = "error") -> tuple[list[Annotation], dict]:
    """-> (one Annotation per image of `split`, class names)."""
    data_yaml = Path(data_yaml)
    data = load_yaml(data_yaml)
    names = dataset_names(data, data_yaml)
    if split not in data:
        raise DatasetError(f"{data_yaml}: no {split!r} split (has: {sorted(k for k in data if k != 'names')})")
    root = data_yaml.parent / str(data.get("path", "."))
    checker = LabelChecker(len(names), on_error)
    annotations, labelled_by = [], {}
    for image in image_files(data[split], root, data_yaml):
        labels = label_file(image)
        if labelled_by.setdefault(labels, image) != image:
            raise DatasetError(f"{image}: {labelled_by[labels].name} has the same label file {labels} (one name, one "
                               "image: rename one of them)")  # fmt: skip
        size = image_size(image)
        annotations.append(Annotation(image, size, *read_labels(labels, size, checker)))
    return annotations, names
