"""Writing predictions to a run folder: plotted images, plotted videos, YOLO-format label files."""

from __future__ import annotations

from pathlib import Path

import cv2

from ..data.sources import Frame
from ..results import Results


def increment_dir(project: str | Path, name: str) -> Path:
    """project/name, or project/name2, name3, ... if it exists; created."""
    base = Path(project) / name
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{name}{n}"), n + 1
    path.mkdir(parents=True)
    return path


class PredictionSaver:
    """Saves each (frame, result) into `save_dir`: images as files, video frames into one video per source."""

    def __init__(self, save_dir: Path, save_images: bool, save_txt: bool, save_conf: bool = False):
        self.save_dir = save_dir
        self.save_images = save_images
        self.save_txt = save_txt
        self.save_conf = save_conf
        self._writers: dict[str, cv2.VideoWriter] = {}

    def add(self, frame: Frame, result: Results) -> None:
        stem = Path(frame.path).stem
        if self.save_txt:
            suffix = "" if frame.video_frame is None else f"_{frame.video_frame}"
            result.save_txt(self.save_dir / "labels" / f"{stem}{suffix}.txt", save_conf=self.save_conf)
        if not self.save_images:
            return
        if frame.video_frame is None:
            name = Path(frame.path).name if Path(frame.path).suffix else f"{stem}.jpg"
            result.save(self.save_dir / name)
        else:
            self._video_writer(frame, stem).write(result.plot())
        result.save_dir = str(self.save_dir)

    def _video_writer(self, frame: Frame, stem: str) -> cv2.VideoWriter:
        if frame.path not in self._writers:
            capture = cv2.VideoCapture(frame.path)
            fps = capture.get(cv2.CAP_PROP_FPS) or 30
            capture.release()
            height, width = frame.image.shape[:2]
            path = str(self.save_dir / f"{stem}.mp4")
            self._writers[frame.path] = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        return self._writers[frame.path]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()
