"""The pictures experiment trackers show at the end of a run: the best weights' detections on the first val images."""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGES = 4  # val images drawn


def val_previews(trainer: Any) -> list[np.ndarray]:
    """The first IMAGES val images with the best weights' detections drawn, as (H, W, 3) uint8 RGB arrays; none
    when plots are off, there is no val split or no best weights."""
    if not (trainer.args.plots and trainer.val_set is not None and trainer.best.is_file()):
        return []
    from ..model import RTDETR

    model = RTDETR(trainer.best)
    paths = [trainer.val_set.annotations[i].image for i in range(min(IMAGES, len(trainer.val_set)))]
    return [result.plot()[..., ::-1].copy() for result in model.predict(paths, imgsz=trainer.args.imgsz, verbose=False)]
