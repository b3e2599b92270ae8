"""Prediction results with the ultralytics surface: `Results` per image, `Boxes` for its detections.

results = model.predict("bus.jpg")
r = results[0]
r.boxes.xyxy, r.boxes.conf, r.boxes.cls     # (N, 4), (N,), (N,)
r.plot(); r.show(); r.save("out.jpg"); r.save_txt("out.txt"); r.to_json(); r.summary()
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .plotting import draw_detections


class Boxes:
    """Detections of one image: `data` (N, 6) = x1, y1, x2, y2 (pixels), confidence, class.

    Works on torch tensors or numpy arrays alike (`cpu()`, `numpy()`, `to()` convert).
    """

    def __init__(self, data: torch.Tensor | np.ndarray, orig_shape: tuple[int, int]):
        if data.ndim != 2 or data.shape[1] != 6:
            raise ValueError(f"Boxes expects (N, 6) data, got {tuple(data.shape)}")
        self.data = data
        self.orig_shape = tuple(orig_shape)  # (height, width)

    @property
    def xyxy(self):
        """(N, 4) corners in pixels."""
        return self.data[:, :4]

    @property
    def conf(self):
        """(N,) confidence."""
        return self.data[:, 4]

    @property
    def cls(self):
        """(N,) class index (float, as in ultralytics)."""
        return self.data[:, 5]

    @property
    def id(self):
        """Track ids: always None (no tracker yet)."""
        return None

    is_track = False

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
        data = self.data[index]
        return Boxes(data[None] if data.ndim == 1 else data, self.orig_shape)

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
    speed: {"preprocess", "inference", "postprocess"} in milliseconds per image.
    """

    def __init__(
        self,
        orig_img: np.ndarray,
        path: str,
        names: dict[int, str],
        boxes: torch.Tensor | np.ndarray | None = None,
        speed: dict[str, float] | None = None,
    ):
        self.orig_img = orig_img
        self.orig_shape = tuple(orig_img.shape[:2])
        self.path = path
        self.names = names
        self.boxes = Boxes(boxes if boxes is not None else torch.zeros(0, 6), self.orig_shape)
        self.speed = speed or {"preprocess": None, "inference": None, "postprocess": None}
        self.save_dir: str | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> Results:
        return self._with_boxes(self.boxes[index].data)

    def _with_boxes(self, data) -> Results:
        result = Results(self.orig_img, self.path, self.names, data, self.speed)
        result.save_dir = self.save_dir
        return result

    def new(self) -> Results:
        """A Results for the same image and names, without detections."""
        return Results(self.orig_img, self.path, self.names, speed=self.speed)

    def cpu(self) -> Results:
        return self._with_boxes(self.boxes.cpu().data)

    def numpy(self) -> Results:
        return self._with_boxes(self.boxes.numpy().data)

    def cuda(self) -> Results:
        return self._with_boxes(self.boxes.cuda().data)

    def to(self, *args: Any, **kwargs: Any) -> Results:
        return self._with_boxes(self.boxes.to(*args, **kwargs).data)

    # --- description -------------------------------------------------------------------------------------

    def verbose(self) -> str:
        """Counts per class, e.g. '4 persons, 1 bus, ' (ultralytics' log string); '(no detections), ' if none."""
        if not len(self):
            return "(no detections), "
        classes = self.boxes.numpy().cls.astype(int)
        counts = {c: int((classes == c).sum()) for c in sorted(set(classes.tolist()))}
        return "".join(f"{n} {self.names.get(c, c)}{'s' * (n > 1)}, " for c, n in counts.items())

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per detection: name, class, confidence, box {x1, y1, x2, y2} (normalised if asked)."""
        boxes = self.boxes.numpy()
        coords = boxes.xyxyn if normalize else boxes.xyxy
        rows = []
        for (x1, y1, x2, y2), conf, cls in zip(coords.tolist(), boxes.conf.tolist(), boxes.cls.tolist()):
            rows.append(
                {
                    "name": self.names.get(int(cls), str(int(cls))),
                    "class": int(cls),
                    "confidence": round(conf, decimals),
                    "box": {k: round(v, decimals) for k, v in zip(("x1", "y1", "x2", "y2"), (x1, y1, x2, y2))},
                }
            )
        return rows

    def to_json(self, normalize: bool = False, decimals: int = 5) -> str:
        """`summary()` as a JSON string."""
        return json.dumps(self.summary(normalize, decimals), indent=2)

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
    ) -> np.ndarray:
        """The image (BGR uint8) with boxes and `name conf` labels drawn on a copy."""
        canvas = (self.orig_img if img is None else img).copy()
        if not boxes or not len(self):
            return canvas
        det = self.boxes.numpy()
        texts = [
            (f"{self.names.get(int(c), int(c))} {s:.2f}" if conf else str(self.names.get(int(c), int(c))))
            if labels
            else None
            for c, s in zip(det.cls, det.conf)
        ]
        return draw_detections(canvas, det.xyxy, det.cls.astype(int), texts, line_width, font_size)

    def show(self, title: str | None = None) -> None:
        """Display the plotted image (OpenCV window, or matplotlib where OpenCV has no GUI)."""
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
        """Write the plotted image; default name `results_<source name>`. Returns the path."""
        filename = Path(filename or f"results_{Path(self.path).stem}.jpg")
        filename.parent.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(filename.suffix or ".jpg", self.plot())
        if not ok:
            raise ValueError(f"{filename}: cannot encode an image with this extension")
        encoded.tofile(filename)
        return str(filename)

    def save_txt(self, txt_file: str | Path, save_conf: bool = False) -> str:
        """Append YOLO-format lines `class cx cy w h [conf]` (normalised) to `txt_file`. Returns the path."""
        boxes = self.boxes.numpy()
        lines = []
        for cls, xywhn, conf in zip(boxes.cls.astype(int), boxes.xywhn, boxes.conf):
            values = [*xywhn.tolist(), float(conf)] if save_conf else xywhn.tolist()
            lines.append(f"{cls} " + " ".join(f"{v:.6g}" for v in values))
        txt_file = Path(txt_file)
        txt_file.parent.mkdir(parents=True, exist_ok=True)
        with open(txt_file, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        return str(txt_file)
