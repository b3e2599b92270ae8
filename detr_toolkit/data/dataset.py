"""The training/validation dataset: annotations (from any format) -> transformed images and DETR targets."""

from __future__ import annotations

import gc
import random
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.ops import box_convert, masks_to_boxes

from .annotation_table import AnnotationTable
from .annotations import Annotation
from .images import read_image
from .mosaic import Mosaic
from .polygons import instance_masks
from .transforms import build_transforms, to_sample


class DetectionDataset(Dataset):
    """Item i -> (image (3, imgsz, imgsz) float RGB 0..1, target {"boxes": (n, 4) cxcywh in 0..1, "labels": (n,),
    "index": i, "orig_size": (h, w)}), and with segmentation labels "masks": (n, imgsz, imgsz) uint8 (a box without
    a polygon: its box filled); then each box is its mask's extent (as ultralytics makes them from the segments
    after augmenting: a box a crop cuts then fits what remains of its object), and an object whose mask a
    transform emptied is dropped.

    augment: probabilities of the training augmentations (see `transforms.build_transforms`), None to only resize.
    mosaic, mixup: probabilities of a mosaic of item i with three random others (`mosaic.Mosaic`) and of blending
    in a second random sample with its boxes; `mixing = False` turns both off (the final epochs of training).
    """

    def __init__(self, annotations: Sequence[Annotation], names: dict[int, str], imgsz: int,
                 augment: dict[str, float] | None = None, mosaic: float = 0.0, mixup: float = 0.0):  # fmt: skip
        self.annotations, self.names, self.imgsz = AnnotationTable.of(annotations), names, imgsz
        self.with_masks = self.annotations.has_segments
        self.size_told = False  # an image whose size differs from its record: said once per process
        self.transforms = build_transforms(imgsz, augment)
        self.mosaic, self.mixup, self.mixing = mosaic, mixup, True
        self.mosaic_transforms = build_transforms(imgsz, augment, crops=False) if mosaic else None
        self.make_mosaic = Mosaic(imgsz)

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        annotation = self.annotations[index]
        sample = self._augmented(index)
        if self.mixing and self.mixup and random.random() < self.mixup:
            other = self._augmented(random.randrange(len(self)))
            weight = random.uniform(0.45, 0.55)  # DEIM's range
            mixed = {key: torch.cat([value, other[key]]) for key, value in sample.items() if key != "image"}
            mixed["image"] = sample["image"] * weight + other["image"] * (1 - weight)
            sample = mixed
        image, boxes = sample.pop("image"), sample.pop("boxes")
        height, width = image.shape[-2:]
        boxes = box_convert(boxes, "xyxy", "cxcywh") / torch.tensor([width, height, width, height], dtype=boxes.dtype)
        target = {"boxes": boxes, **sample, "index": index, "orig_size": annotation.size}
        return image, target

    def _augmented(self, index: int) -> dict[str, torch.Tensor]:
        """Item `index` transformed (or a mosaic of it) -> {"image": (3, imgsz, imgsz) float, "boxes": (n, 4) xyxy
        pixels, "labels": (n,)[, "masks": (n, imgsz, imgsz) uint8]}, plain tensors."""
        if self.mosaic_transforms is not None and self.mixing and random.random() < self.mosaic:
            partners = [random.randrange(len(self)) for _ in range(3)]
            sample = self.mosaic_transforms(self.make_mosaic([self._read(i) for i in (index, *partners)]))
        else:
            sample = self.transforms(self._read(index))
        sample = {key: value.as_subclass(torch.Tensor) for key, value in sample.items()}
        if "masks" in sample:
            kept = sample["masks"].flatten(1).any(1).bool()
            sample = {key: value if key == "image" else value[kept] for key, value in sample.items()}
            sample["boxes"] = masks_to_boxes(sample["masks"]) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # pixel edges
        return sample

    def _read(self, index: int) -> dict[str, Any]:
        """Item `index`'s image and boxes, the boxes scaled to the file where its size differs from the record."""
        annotation = self.annotations[index]
        bgr = read_image(annotation.image)
        boxes = annotation.boxes
        if bgr.shape[:2] != annotation.size:
            (height, width), (recorded_height, recorded_width) = bgr.shape[:2], annotation.size
            boxes = boxes * np.array([width / recorded_width, height / recorded_height] * 2, np.float32)
            if not self.size_told:
                warnings.warn(
                    f"{annotation.image}: the image is {width}x{height}, its record says {recorded_width}x"
                    f"{recorded_height}: boxes scaled to the file, predictions scored in the record's pixels (said "
                    f"once; other images may differ in size from their record too)",
                    stacklevel=2,
                )
                self.size_told = True
        image = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)
        masks = None
        if self.with_masks:
            scale = np.array(bgr.shape[1::-1], np.float32) / np.array(annotation.size[::-1], np.float32)
            segments = [[polygon * scale for polygon in polygons] for polygons in annotation.segments]
            masks = torch.from_numpy(instance_masks(segments, boxes, bgr.shape[:2]))
        return to_sample(image, torch.from_numpy(boxes), torch.from_numpy(annotation.classes), masks)


def worker_start(worker_id: int) -> None:
    """A data-loader worker's first step: freeze, for the garbage collector, every object it inherited from the
    main process (torch's modules, the annotations, ...), whose first full collection would otherwise visit them
    all and so copy every page they sit on into the worker (~100 MiB each)."""
    gc.freeze()


class Collate:
    """Stack a batch; with `sizes`, resize the whole batch to one of them at random (multi-scale training).

    -> images (B, 3, S, S), targets [dict]. Boxes are relative, so resizing leaves them valid.
    """

    def __init__(self, sizes: Sequence[int] | None = None):
        self.sizes = list(sizes or [])

    def __call__(self, batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
        images = torch.stack([image for image, _ in batch])
        if self.sizes:
            size = random.choice(self.sizes)
            if size != images.shape[-1]:
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return images, [target for _, target in batch]
