"""Prediction results with the ultralytics surface: `Results` per image, `Boxes` for its detections.

results = model.predict("bus.jpg")
r = results[0]
r.boxes.xyxy, r.boxes.conf, r.boxes.cls     # (N, 4), (N,), (N,)
r.masks.data, r.masks.xy                    # a segmentation model's: (N, H, W), N polygons (see masks.py)
r.plot(); r.show(); r.save("out.jpg"); r.save_txt("out.txt"); r.save_crop("crops")
r.summary(); r.to_json(); r.to_csv(); r.to_df()
r[:3]                                       # the first three detections, as a Results

A detector's Results carry no masks (a segmentation model's do), class probabilities, keypoints or oriented boxes:
those attributes exist (as ultralytics' do) and are None, so that code written for any ultralytics result
(supervision, SAHI) reads ours.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .data.images import write_image
from .errors import DetrToolkitError, OutputError
from .files import free_path, make_dirs
from .masks import Masks
from .plotting import draw_detections, draw_masks, has_display

# Crops are widened as ultralytics' save_one_box widens them: width and height x 1.02 + 10 pixels.
CROP_GAIN, CROP_PAD = 1.02, 10


def folder_name(name: str) -> str:
    """A class name as a folder name inside the save folder: path separators and control characters replaced, no
    leading dots (a checkpoint's class names are not trusted to stay inside)."""
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", name).lstrip(".").strip() or "_"


class Boxes:
    """Detections of one image: `data` (N, 6) = x1, y1, x2, y2 (pixels), confidence, class, or (N, 7) with a track
    id before the confidence (x1, y1, x2, y2, id, confidence, class), as in ultralytics.

    Works on torch tensors or numpy arrays alike (`cpu()`, `numpy()`, `to()` convert).
    """

    def __init__(self, data: torch.Tensor | np.ndarray, orig_shape: tuple[int, int]):
        if data.ndim == 1:
            data = data[None]
        if data.ndim != 2 or data.shape[1] not in (6, 7):
            raise ValueError(f"Boxes expects (N, 6) or (N, 7) data, got {tuple(data.shape)}")
        self.data = data
        self.orig_shape = tuple(orig_shape)  # (height, width)

    @property
    def is_track(self) -> bool:
        """True when the boxes carry track ids."""
        return self.data.shape[1] == 7

    @property
    def xyxy(self):
        """(N, 4) corners in pixels."""
        return self.data[:, :4]

    @property
    def conf(self):
        """(N,) confidence."""
        return self.data[:, -2]

    @property
    def cls(self):
        """(N,) class index (float, as in ultralytics)."""
        return self.data[:, -1]

    @property
    def id(self):
        """(N,) track ids, or None until the boxes are tracked."""
        return self.data[:, -3] if self.is_track else None

    @property
    def xywh(self):
        """(N, 4) centre x, centre y, width, height in pixels."""
        xyxy = self.xyxy
        xy = (xyxy[:, :2] + xyxy[:, 2:]) / 2
        wh = xyxy[:, 2:] - xyxy[:, :2]
        return torch.cat([xy, wh], 1) if isinstance(xyxy, torch.Tensor) else np.concatenate([xy, wh], 1)

    def _normalise(self, boxes):
        height, width = self.orig_shape
        scale = [width, height, width, height]
        if isinstance(boxes, torch.Tensor):
            return boxes / torch.tensor(scale, dtype=boxes.dtype, device=boxes.device)
        return boxes / np.array(scale, dtype=boxes.dtype)

    @property
    def xyxyn(self):
        """(N, 4) corners normalised by the image size."""
        return self._normalise(self.xyxy)

    @property
    def xywhn(self):
        """(N, 4) centre and size normalised by the image size."""
        return self._normalise(self.xywh)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> Boxes:
        return Boxes(self.data[index], self.orig_shape)

    def cpu(self) -> Boxes:
        return Boxes(self.data.cpu(), self.orig_shape) if isinstance(self.data, torch.Tensor) else self

    def numpy(self) -> Boxes:
        data = self.data.detach().cpu().numpy() if isinstance(self.data, torch.Tensor) else self.data
        return Boxes(data, self.orig_shape)

    def cuda(self) -> Boxes:
        return self.to("cuda")

    def to(self, *args: Any, **kwargs: Any) -> Boxes:
        data = self.data if isinstance(self.data, torch.Tensor) else torch.from_numpy(self.data)
        return Boxes(data.to(*args, **kwargs), self.orig_shape)

    def __repr__(self) -> str:
        return f"Boxes(n={len(self)}, orig_shape={self.orig_shape})\n{self.data}"


class Results:
    """Detections on one image, with the image, class names and timings.

    orig_img: BGR uint8 (H, W, 3). boxes: Boxes. names: {class index: name}. path: the image's source.
    masks: a segmentation model's Masks (N, H, W), one per box; None for a detector.
    speed: {"preprocess", "inference", "postprocess"} in milliseconds per image.
    probs, keypoints, obb: None (ultralytics' attributes of other tasks).
    """

    probs = keypoints = obb = None

    def __init__(
        self,
        orig_img: np.ndarray,
        path: str,
        names: dict[int, str],
        boxes: torch.Tensor | np.ndarray | None = None,
        speed: dict[str, float] | None = None,
        masks: torch.Tensor | np.ndarray | None = None,
    ):
        self.orig_img = orig_img
        self.orig_shape = tuple(orig_img.shape[:2])
        self.path = path
        self.names = names
        self.boxes = Boxes(boxes if boxes is not None else torch.zeros(0, 6), self.orig_shape)
        self.masks = Masks(masks, self.orig_shape) if masks is not None else None
        if self.masks is not None and len(self.masks) != len(self.boxes):
            raise ValueError(f"{len(self.masks)} masks for {len(self.boxes)} boxes")
        self.speed = speed or {"preprocess": None, "inference": None, "postprocess": None}
        self.save_dir: str | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> Results:
        masks = None if self.masks is None else self.masks[index].data
        return self._with(self.boxes[index].data, masks)

    def _with(self, boxes, masks) -> Results:
        result = Results(self.orig_img, self.path, self.names, boxes, self.speed, masks)
        result.save_dir = self.save_dir
        return result

    def new(self) -> Results:
        """A Results for the same image, names, timings and save folder, without detections."""
        return self._with(None, None)

    def update(self, boxes: torch.Tensor | np.ndarray | None = None,
               masks: torch.Tensor | np.ndarray | None = None) -> None:  # fmt: skip
        """Replace the detections ((N, 6) or (N, 7), see Boxes, clipped to the image, as ultralytics does) and/or
        their masks (N, H, W); ValueError where masks and boxes would then differ in number."""
        new_masks = Masks(masks, self.orig_shape) if masks is not None else self.masks
        new_boxes = self.boxes
        if boxes is not None:
            height, width = self.orig_shape
            boxes = boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, dtype=np.float32)
            boxes = boxes[None] if boxes.ndim == 1 else boxes
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
            new_boxes = Boxes(boxes, self.orig_shape)
        if new_masks is not None and len(new_masks) != len(new_boxes):
            raise ValueError(f"{len(new_masks)} masks for {len(new_boxes)} boxes: give both, of the same detections")
        self.boxes, self.masks = new_boxes, new_masks

    def _apply(self, method: str, *args: Any, **kwargs: Any) -> Results:
        masks = None if self.masks is None else getattr(self.masks, method)(*args, **kwargs).data
        return self._with(getattr(self.boxes, method)(*args, **kwargs).data, masks)

    def cpu(self) -> Results:
        return self._apply("cpu")

    def numpy(self) -> Results:
        return self._apply("numpy")

    def cuda(self) -> Results:
        return self._apply("cuda")

    def to(self, *args: Any, **kwargs: Any) -> Results:
        return self._apply("to", *args, **kwargs)

    # --- description -------------------------------------------------------------------------------------

    def verbose(self) -> str:
        """Counts per class, e.g. '4 persons, 1 bus, ' (ultralytics' log string); '(no detections), ' if none."""
        if not len(self):
            return "(no detections), "
        classes = self.boxes.numpy().cls.astype(int)
        counts = {c: int((classes == c).sum()) for c in sorted(set(classes.tolist()))}
        return "".join(f"{n} {self.names.get(c, c)}{'s' * (n > 1)}, " for c, n in counts.items())

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per detection: name, class, confidence, box {x1, y1, x2, y2}, and with masks segments
        {x: [...], y: [...]} (its polygon; all normalised if asked)."""
        boxes = self.boxes.numpy()
        coords = boxes.xyxyn if normalize else boxes.xyxy
        ids = boxes.id.astype(int).tolist() if boxes.is_track else [None] * len(boxes)
        rows = []
        for (x1, y1, x2, y2), conf, cls, track in zip(coords.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), ids):
            row = {
                "name": self.names.get(int(cls), str(int(cls))),
                "class": int(cls),
                "confidence": round(conf, decimals),
                "box": {k: round(v, decimals) for k, v in zip(("x1", "y1", "x2", "y2"), (x1, y1, x2, y2))},
            }
            if track is not None:
                row["track_id"] = track
            rows.append(row)
        if self.masks is not None:
            scale = np.array(self.orig_shape[::-1] if normalize else (1, 1), dtype=np.float32)  # as ultralytics rounds
            for row, polygon in zip(rows, self.masks.xy):
                x, y = (polygon / scale).astype(float).round(decimals).T.tolist() if len(polygon) else ([], [])
                row["segments"] = {"x": x, "y": y}
        return rows

    def to_json(self, normalize: bool = False, decimals: int = 5) -> str:
        """`summary()` as a JSON string."""
        return json.dumps(self.summary(normalize, decimals), indent=2)

    def to_csv(self, normalize: bool = False, decimals: int = 5) -> str:
        """`summary()` as CSV text, laid out as ultralytics writes it: name, class, confidence, box[, track_id]."""
        rows = self.summary(normalize, decimals)
        if not rows:
            return "\n"
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)  # the box mapping is written as its repr, as ultralytics' fallback does
        return out.getvalue()

    def to_df(self, normalize: bool = False, decimals: int = 5):
        """`summary()` as a polars DataFrame (as ultralytics returns); needs polars."""
        try:
            import polars as pl
        except ImportError:
            raise DetrToolkitError("Results.to_df needs polars: pip install polars") from None
        return pl.DataFrame(self.summary(normalize, decimals))

    def __repr__(self) -> str:
        return f"Results(path={self.path!r}, orig_shape={self.orig_shape}, detections={len(self)})"

    # --- pictures and files ------------------------------------------------------------------------------

    def plot(
        self,
        conf: bool = True,
        labels: bool = True,
        boxes: bool = True,
        line_width: int | None = None,
        font_size: float | None = None,
        img: np.ndarray | None = None,
        masks: bool = True,
    ) -> np.ndarray:
        """The image (BGR uint8) with masks (half-transparent, in the class colours), boxes and `name conf` labels
        drawn on a copy."""
        canvas = (self.orig_img if img is None else img).copy()
        det = self.boxes.numpy()
        if masks and self.masks is not None and len(self):
            draw_masks(canvas, self.masks.numpy().data, det.cls.astype(int))
        if not boxes or not len(self):
            return canvas
        ids = det.id.astype(int) if det.is_track else [None] * len(det)
        texts = [
            ("" if i is None else f"id:{i} ") + str(self.names.get(int(c), int(c))) + (f" {s:.2f}" if conf else "")
            if labels
            else None
            for c, s, i in zip(det.cls, det.conf, ids)
        ]
        return draw_detections(canvas, det.xyxy, det.cls.astype(int), texts, line_width, font_size)

    def show(self, title: str | None = None) -> None:
        """Display the plotted image (OpenCV window, or matplotlib where OpenCV has no GUI); without a display, warn
        and show nothing."""
        if not has_display():
            warnings.warn("show(): no display (DISPLAY and WAYLAND_DISPLAY are unset), nothing shown; save() writes "
                          "the plotted image", stacklevel=2)  # fmt: skip
            return
        image = self.plot()
        try:
            cv2.imshow(title or str(self.path), image)
            cv2.waitKey(0)
            cv2.destroyAllWindows()
        except cv2.error:
            import matplotlib.pyplot as plt

            plt.imshow(image[..., ::-1])
            plt.axis("off")
            plt.title(title or str(self.path))
            plt.show()

    def save(self, filename: str | Path | None = None) -> str:
        """Write the plotted image; default name `results_<source name>.jpg`. Returns the path."""
        filename = Path(filename or f"results_{Path(self.path).stem}.jpg")
        return str(write_image(filename, self.plot()))

    def save_txt(self, txt_file: str | Path, save_conf: bool = False) -> str:
        """Append YOLO-format lines `class cx cy w h [conf] [track id]` (normalised) to `txt_file`; with masks,
        YOLO-seg lines `class x1 y1 x2 y2 ... [conf] [track id]` (the polygon, normalised; a mask of fewer than 3
        points writes no line). Returns the path."""
        boxes = self.boxes.numpy()
        ids = boxes.id.astype(int).tolist() if boxes.is_track else [None] * len(boxes)
        shapes = boxes.xywhn.tolist() if self.masks is None else [p.ravel().tolist() for p in self.masks.xyn]
        lines = []
        for cls, coords, conf, track in zip(boxes.cls.astype(int), shapes, boxes.conf, ids):
            if len(coords) < (4 if self.masks is None else 6):
                continue
            values = [*coords, float(conf)] if save_conf else coords
            values += [] if track is None else [track]
            lines.append(f"{cls} " + " ".join(f"{v:.6g}" for v in values))
        txt_file = Path(txt_file)
        make_dirs(txt_file.parent)
        try:
            with open(txt_file, "a", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
        except OSError as error:
            raise OutputError(f"{txt_file}: cannot write ({error.strerror or error})") from None
        return str(txt_file)

    def save_crop(self, save_dir: str | Path, file_name: str | Path = "im.jpg") -> list[str]:
        """Write each detection's region (widened by CROP_GAIN and CROP_PAD, as ultralytics crops) to
        `save_dir/<class name>/<file_name stem>.jpg`, numbered `stem-2.jpg`, ... when taken. Returns the paths."""
        boxes = self.boxes.numpy()
        height, width = self.orig_shape
        centre, size = boxes.xywh[:, :2], boxes.xywh[:, 2:] * CROP_GAIN + CROP_PAD
        corners = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(int)
        corners[:, [0, 2]] = corners[:, [0, 2]].clip(0, width)
        corners[:, [1, 3]] = corners[:, [1, 3]].clip(0, height)
        written = []
        for (x1, y1, x2, y2), cls in zip(corners.tolist(), boxes.cls.astype(int).tolist()):
            if x2 > x1 and y2 > y1:
                folder = Path(save_dir) / folder_name(str(self.names.get(cls, cls)))
                path = free_path(folder / f"{Path(file_name).stem}.jpg")
                written.append(str(write_image(path, self.orig_img[y1:y2, x1:x2])))
        return written
