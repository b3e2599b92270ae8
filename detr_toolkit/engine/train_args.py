"""Training settings: one dataclass, with RT-DETR's recipe as defaults; YAML files and key=value override it."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_yaml
from ..errors import ConfigError


@dataclass
class TrainArgs:
    """What `detect train` / `RTDETR.train()` take. Unknown keys are refused by name."""

    data: str = ""  # YOLO data.yaml, COCO data yaml (format: coco) or instances .json
    epochs: int = 72
    batch: int = 8
    imgsz: int = 640
    # data-loading processes; on 2 cores a worker steals the model's second core, so loading in-process is faster
    workers: int = field(default_factory=lambda: 0 if (os.cpu_count() or 1) <= 2 else 2)
    device: str | None = None  # cpu, cuda, cuda:N (default: CUDA if available)
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False  # reuse project/name instead of incrementing it
    resume: str | bool = False  # True: the last run's weights/last.pt; or a path to one
    seed: int = 0
    lr: float = 1e-4  # AdamW learning rate of everything but the backbone
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4  # not applied to norms and biases
    warmup_iters: int = 2000  # linear learning-rate warm-up, in optimizer steps
    schedule: str = "cosine"  # after warm-up: cosine | linear | constant
    lrf: float = 0.01  # final learning rate, as a fraction of the initial one
    clip_grad: float = 0.1  # max gradient norm (0: off)
    accumulate: int = 1  # batches per optimizer step
    ema_decay: float = 0.9999
    ema_tau: int = 2000  # EMA decay ramps up as 1 - exp(-updates / tau)
    amp: str = "bf16"  # CUDA mixed precision: bf16 | fp16 | none (CPU always trains in float32)
    photometric: float = 0.5  # augmentation probabilities (0: off)
    zoom_out: float = 0.5
    iou_crop: float = 0.8
    hflip: float = 0.5
    multi_scale: list[int] = field(default_factory=list)  # training sizes to draw per batch ([]: imgsz only)
    val: bool = True  # evaluate on the val split after every epoch
    plots: bool = True  # results.png every epoch; first batch, PR curves and confusion matrix
    on_bad_label: str = "error"  # error | skip
    categories: list[str | int] | None = None  # COCO subset: category names or ids
    max_images: int | None = None  # COCO subset: first N images
    images: str | None = None  # COCO: image folder when `data` is an instances .json
    verbose: bool = True

    @classmethod
    def create(cls, cfg: str | Path | None = None, defaults: dict | None = None, **overrides: Any) -> TrainArgs:
        """Field defaults <- `defaults` (e.g. the model's imgsz) <- the YAML file `cfg` <- keyword overrides;
        unknown keys raise ConfigError."""
        values = {**(defaults or {}), **(load_yaml(cfg) if cfg else {}), **overrides}
        values = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}  # paths stay YAML-able
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training argument(s) {unknown} (known: {', '.join(sorted(known))})")
        args = cls(**values)
        args.check()
        return args

    def check(self) -> None:
        if not self.data and not self.resume:
            raise ConfigError("training needs data= (a YOLO data.yaml, a COCO data yaml or an instances .json)")
        for name in ("epochs", "batch", "imgsz", "accumulate"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"schedule={self.schedule!r}: use cosine, linear or constant")
        if self.amp not in ("bf16", "fp16", "none"):
            raise ConfigError(f"amp={self.amp!r}: use bf16, fp16 or none")

    @property
    def augment(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("photometric", "zoom_out", "iou_crop", "hflip")}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
