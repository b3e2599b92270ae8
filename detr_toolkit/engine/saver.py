"""Writing predictions to a run folder: plotted images, plotted videos, YOLO-format label files, crops, and tracks
in the MOT Challenge format (`mot/<video>.txt`; `mot/images.txt` for a sequence of image files).

The folder (`project/name`, incremented as ultralytics does: name-2, name-3, ...) is made when the first output is
written, so a run that fails before saving anything leaves no empty folder. Every source keeps its outputs: two sources
with the same file name (`a/bus.jpg`, `b/bus.jpg`) are saved as `bus.jpg` and `bus-2.jpg`, labels alike.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from ..data.images import write_image
from ..data.sources import Frame
from ..errors import OutputError
from ..files import INCREMENT_SEPARATOR, first_missing, increment_dir, make_dirs, remove_if_unused, write_file
from ..results import Results

DEFAULT_IMAGE_SUFFIX = ".jpg"  # for sources without a suffix OpenCV can write (URLs, arrays, .heic, .gif, ...)


class PredictionSaver:
    """Saves each (frame, result) into `project/name`: images as files, video frames into one video per source."""

    def __init__(self, project: str | Path, name: str, save_images: bool, save_txt: bool, save_conf: bool = False,
                 save_crop: bool = False, save_mot: bool = False):  # fmt: skip
        self.project, self.name = project, name
        self.save_images, self.save_txt, self.save_conf, self.save_crop = save_images, save_txt, save_conf, save_crop
        self.save_mot = save_mot
        self._mot_lines: dict[str, list[str]] = {}  # MOT file stem -> its lines
        self._image_frames = 0  # image files seen, the frame numbers of their MOT sequence
        self.save_dir: Path | None = None  # made on the first write
        self.made_from = first_missing(Path(project) / name)  # the outermost folder a first write would make
        self._stems: dict[str, str] = {}  # source -> the file stem its outputs are saved under
        self._writers: dict[str, cv2.VideoWriter] = {}

    def _stem(self, source: str) -> str:
        """The stem `source`'s outputs get: its own, or its own numbered when another source took it."""
        if source not in self._stems:
            stem, taken, n = Path(source).stem or "image", set(self._stems.values()), 2
            unique = stem
            while unique in taken:
                unique, n = f"{stem}{INCREMENT_SEPARATOR}{n}", n + 1
            self._stems[source] = unique
        return self._stems[source]

    def add(self, frame: Frame, result: Results) -> None:
        if self.save_dir is None:
            self.save_dir = increment_dir(self.project, self.name)
        stem = self._stem(frame.path)
        if self.save_txt:
            suffix = "" if frame.video_frame is None else f"_{frame.video_frame}"
            result.save_txt(self.save_dir / "labels" / f"{stem}{suffix}.txt", save_conf=self.save_conf)
        if self.save_crop:
            suffix = "" if frame.video_frame is None else f"_{frame.video_frame}"
            result.save_crop(self.save_dir / "crops", f"{stem}{suffix}")
        if self.save_mot:
            self._add_mot_lines(frame, stem, result)
        if not self.save_images:
            return
        if frame.video_frame is None:
            suffix = Path(frame.path).suffix
            if not suffix or not cv2.haveImageWriter(f"x{suffix}"):
                suffix = DEFAULT_IMAGE_SUFFIX
            write_image(self.save_dir / f"{stem}{suffix}", result.plot())
        else:
            self._video_writer(frame, stem).write(result.plot())
        result.save_dir = str(self.save_dir)

    def _add_mot_lines(self, frame: Frame, stem: str, result: Results) -> None:
        """`frame,id,x,y,w,h,conf,-1,-1,-1` per tracked box (frames counted from 1, boxes in pixels)."""
        if frame.video_frame is None:  # image files: one sequence, in the order given
            self._image_frames += 1
        lines = self._mot_lines.setdefault(stem if frame.video_frame is not None else "images", [])
        number = self._image_frames if frame.video_frame is None else frame.video_frame + 1
        boxes = result.boxes
        if not boxes.is_track:
            return
        for (x1, y1, x2, y2), track_id, conf in zip(boxes.xyxy.tolist(), boxes.id.tolist(), boxes.conf.tolist()):
            lines.append(f"{number},{int(track_id)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{conf:.4f},-1,-1,-1")

    def _video_writer(self, frame: Frame, stem: str) -> cv2.VideoWriter:
        if frame.path not in self._writers:
            capture = cv2.VideoCapture(frame.path)
            fps = capture.get(cv2.CAP_PROP_FPS) or 30
            capture.release()
            height, width = frame.image.shape[:2]
            path = self.save_dir / f"{stem}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not writer.isOpened():
                raise OutputError(f"{path}: cannot write the video")
            self._writers[frame.path] = writer
        return self._writers[frame.path]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()
        for stem, lines in self._mot_lines.items():
            make_dirs(self.save_dir / "mot")
            write_file(self.save_dir / "mot" / f"{stem}.txt", "".join(line + "\n" for line in lines).encode())
        self._mot_lines.clear()
        if self.save_dir is not None and not any(self.save_dir.iterdir()):  # nothing was saved (no detections)
            remove_if_unused(self.save_dir, made_from=self.made_from)
            self.save_dir = None
