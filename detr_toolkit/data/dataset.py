"""The training/validation dataset: annotations (from any format) -> transformed images and DETR targets."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from .annotations import Annotation
from .images import read_image
from .transforms import build_transforms, to_sample


class DetectionDataset(Dataset):
    """Item i -> (image (3, imgsz, imgsz) float RGB 0..1, target {"boxes": (n, 4) cxcywh in 0..1, "labels": (n,),
    "index": i, "orig_size": (h, w)}).

    augment: probabilities of the training augmentations (see `transforms.build_transforms`), None to only resize.
    """

    def __init__(self, annotations: Sequence[Annotation], names: dict[int, str], imgsz: int,
                 augment: dict[str, float] | None = None):  # fmt: skip
        self.annotations, self.names, self.imgsz = list(annotations), names, imgsz
        self.transforms = build_transforms(imgsz, augment)

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        annotation = self.annotations[index]
        bgr = read_image(annotation.image)
        image = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)
        sample = self.transforms(
            to_sample(image, torch.from_numpy(annotation.boxes), torch.from_numpy(annotation.classes))
        )
        height, width = sample["image"].shape[-2:]
        boxes = box_convert(sample["boxes"].as_subclass(torch.Tensor), "xyxy", "cxcywh")
        boxes = boxes / torch.tensor([width, height, width, height], dtype=boxes.dtype)
        target = {"boxes": boxes, "labels": sample["labels"], "index": index, "orig_size": annotation.size}
        return sample["image"].as_subclass(torch.Tensor), target


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
