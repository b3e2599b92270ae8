"""Object tracking: detections of consecutive frames -> the same id for the same object, by the `trackers` package
(Roboflow's ByteTrack, BoT-SORT, OC-SORT and SORT; Apache-2.0), an optional extra: pip install 'detr-toolkit[track]'.

    frames -> predict -> Results -> tracker.update (sv.Detections) -> Results with ids: Boxes.data (N, 7) =
    x1, y1, x2, y2, track id, confidence, class, as ultralytics' tracked boxes; detections no track holds are dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import nms

from ..errors import ConfigError
from ..extras import require
from ..results import Results

# Our names (ultralytics' `tracker=` names, its .yaml suffix accepted) -> the trackers package's classes.
TRACKERS = {"bytetrack": "ByteTrackTracker", "botsort": "BoTSORTTracker", "ocsort": "OCSORTTracker",
            "sort": "SORTTracker"}  # fmt: skip


def tracker_name(name: str) -> str:
    """`bytetrack`, `bytetrack.yaml` (ultralytics' spelling) -> `bytetrack`; ConfigError for an unknown one."""
    key = Path(str(name)).name.lower().removesuffix(".yaml").removesuffix(".yml")
    if key not in TRACKERS:
        raise ConfigError(f"tracker={name!r}: unknown tracker (known: {', '.join(TRACKERS)})")
    return key


def make_tracker(name: str, frame_rate: float = 30.0) -> Any:
    """A new tracker of the `trackers` package, for frames at `frame_rate` per second."""
    trackers = require("trackers", "tracking", "track")
    return getattr(trackers, TRACKERS[tracker_name(name)])(frame_rate=frame_rate)


def track(tracker: Any, result: Results, iou: float) -> Results:
    """Update `tracker` with one frame's detections -> that frame's Results holding the tracked ones, with ids.

    Boxes overlapping a better-scored one by more than `iou` are dropped first, whatever their class: a trained
    DETR rarely repeats an object, but a lightly trained one does (in two queries, or as two classes), and a
    tracker would start a track on each repeat.
    """
    import supervision as sv

    boxes = result.boxes.data
    data = boxes[nms(boxes[:, :4], boxes[:, 4], iou)].numpy()
    detections = sv.Detections(xyxy=data[:, :4].astype(np.float32), confidence=data[:, 4].astype(np.float32),
                               class_id=data[:, 5].astype(int))  # fmt: skip
    tracked = tracker.update(detections, result.orig_img) if _takes_frames(tracker) else tracker.update(detections)
    kept = tracked.tracker_id >= 0
    rows = np.column_stack([tracked.xyxy[kept], tracked.tracker_id[kept], tracked.confidence[kept],
                            tracked.class_id[kept]]).astype(np.float32)  # fmt: skip
    result.update(torch.from_numpy(rows.reshape(-1, 7)).to(boxes.device))  # tensors, as every other field
    return result


def _takes_frames(tracker: Any) -> bool:
    """Whether the tracker uses the image (BoT-SORT's camera motion compensation); the others warn when given one."""
    return type(tracker).__name__ == "BoTSORTTracker"
