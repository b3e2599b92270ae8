"""Object tracking: detections of consecutive frames -> the same id for the same object, by the `trackers` package
(Roboflow's ByteTrack, BoT-SORT, OC-SORT and SORT; Apache-2.0), an optional extra: pip install 'detr-toolkit[track]'.

    frames -> predict -> Results -> tracker.update (sv.Detections) -> Results with ids: Boxes.data (N, 7) =
    x1, y1, x2, y2, track id, confidence, class, as ultralytics' tracked boxes; detections no track holds are dropped.
"""

from __future__ import annotations

import inspect
import typing
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import nms

from ..errors import ConfigError
from ..extras import require
from ..results import Results
from ..settings import TRACKERS, tracker_kind

# ultralytics' tracker YAML keys -> the trackers package's arguments that mean the same; its keys without one.
ULTRALYTICS_KEYS = {"track_buffer": "lost_track_buffer", "new_track_thresh": "track_activation_threshold",
                    "track_high_thresh": "high_conf_det_threshold", "gmc_method": "cmc_method"}  # fmt: skip
UNUSED_ULTRALYTICS_KEYS = ("track_low_thresh", "match_thresh", "fuse_score", "proximity_thresh", "appearance_thresh",
                           "with_reid", "model")  # fmt: skip
MAX_FRAMES = 100_000  # frame counts a tracker setting may hold (lost-track buffer, confirmation frames)
NOT_SETTINGS = ("self", "frame_rate", "state_estimator_class", "iou")  # constructor arguments a YAML file cannot set


def tracker_settings(tracker: str) -> tuple[str, dict[str, Any]]:
    """`tracker=` -> (tracker name, its constructor arguments): none for a name, the file's for a YAML file (see
    settings.tracker_kind), each checked against the trackers package's constructor: known, of its type, in range
    (thresholds 0..1, frame counts 0..MAX_FRAMES, choices of a Literal)."""
    kind, spec = tracker_kind(tracker)
    if spec is None:
        return kind, {}
    path = Path(str(tracker)).expanduser()
    spec = {k: v for k, v in spec.items() if k != "tracker_type"}
    unused = sorted(set(spec) & set(UNUSED_ULTRALYTICS_KEYS))
    if unused:
        warnings.warn(f"{path}: {', '.join(unused)}: ultralytics' settings the trackers package's {kind} has not",
                      stacklevel=2)  # fmt: skip
    arguments = {ULTRALYTICS_KEYS.get(k, k): v for k, v in spec.items() if k not in UNUSED_ULTRALYTICS_KEYS}
    constructor = _tracker_class(kind).__init__
    parameters = {n: p for n, p in inspect.signature(constructor).parameters.items() if n not in NOT_SETTINGS}
    unknown = sorted(set(arguments) - set(parameters))
    if unknown:
        raise ConfigError(f"{path}: unknown {kind} setting(s) {unknown} (known: {', '.join(parameters)})")
    hints = typing.get_type_hints(constructor)
    for name, value in arguments.items():
        default, choices = parameters[name].default, typing.get_args(hints.get(name))
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_FRAMES
            expected = f"an integer in 0..{MAX_FRAMES}"
        elif isinstance(default, float):
            ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1, "0..1"
        else:
            ok, expected = value in choices, f"one of {', '.join(map(str, choices))}"
        if not ok:
            raise ConfigError(f"{path}: {name}={value!r}: must be {expected}")
    return kind, arguments


def _tracker_class(kind: str) -> type:
    return getattr(require("trackers", "tracking", "track"), TRACKERS[kind])


def make_tracker(settings: tuple[str, dict[str, Any]], frame_rate: float = 30.0) -> Any:
    """A new tracker of the `trackers` package from `tracker_settings`, for frames at `frame_rate` per second."""
    kind, arguments = settings
    return _tracker_class(kind)(frame_rate=frame_rate, **arguments)


def track(tracker: Any, result: Results, iou: float) -> Results:
    """Update `tracker` with one frame's detections -> that frame's Results holding the tracked ones, with ids.

    Boxes overlapping a better-scored one by more than `iou` are dropped first, whatever their class: a trained
    DETR rarely repeats an object, but a lightly trained one does (in two queries, or as two classes), and a
    tracker would start a track on each repeat.
    """
    import supervision as sv

    boxes = result.boxes.data
    kept = nms(boxes[:, :4], boxes[:, 4], iou)
    data = boxes[kept].numpy()
    masks = None if result.masks is None else result.masks.cpu().data[kept].numpy().astype(bool)
    detections = sv.Detections(xyxy=data[:, :4].astype(np.float32), confidence=data[:, 4].astype(np.float32),
                               class_id=data[:, 5].astype(int), mask=masks)  # fmt: skip
    tracked = tracker.update(detections, result.orig_img) if _takes_frames(tracker) else tracker.update(detections)
    kept = tracked.tracker_id >= 0
    rows = np.column_stack([tracked.xyxy[kept], tracked.tracker_id[kept], tracked.confidence[kept],
                            tracked.class_id[kept]]).astype(np.float32)  # fmt: skip
    masks = None if tracked.mask is None else torch.from_numpy(tracked.mask[kept].astype(np.uint8))
    result.update(torch.from_numpy(rows.reshape(-1, 7)).to(boxes.device), masks)  # tensors, as every other field
    return result


def _takes_frames(tracker: Any) -> bool:
    """Whether the tracker uses the image (BoT-SORT's camera motion compensation); the others warn when given one."""
    return type(tracker).__name__ == "BoTSORTTracker"
