"""SSD's random IoU crop (torchvision's `v2.RandomIoUCrop`) with each option's trials drawn and checked at once.

torchvision tries up to `trials` crops one after another in Python, a dozen small tensor ops each; on small
training images that loop costs more than the rest of the augmentation together. Here the trials of the
sampled IoU option are drawn as one (trials, 2) tensor and checked against all boxes with one `box_iou`;
the first trial that passes every check is taken, as the loop would. The crop distribution is the same (a
test compares the two); only the order in which random numbers are drawn differs.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms.v2 import RandomIoUCrop
from torchvision.transforms.v2 import functional as F


class BatchedRandomIoUCrop(RandomIoUCrop):
    """Same arguments and outputs as torchvision's `RandomIoUCrop` (follow it with `SanitizeBoundingBoxes`)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        boxes = next(item for item in flat_inputs if isinstance(item, tv_tensors.BoundingBoxes))
        height, width = boxes.canvas_size
        boxes = F.convert_bounding_box_format(
            boxes.as_subclass(torch.Tensor), boxes.format, tv_tensors.BoundingBoxFormat.XYXY
        )
        if not len(boxes):  # no crop can hold a box: torchvision loops until it draws the "keep" option
            return {}
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2) x, y
        canvas = torch.tensor([width, height])
        while True:
            min_iou = self.options[int(torch.randint(len(self.options), (1,)))]
            if min_iou >= 1.0:  # the "keep the image as it is" option
                return {}
            scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(self.trials, 2)
            size = (canvas * scale).long()  # (T, 2) crop w, h
            aspect = size[:, 0] / size[:, 1]
            offset = ((canvas - size) * torch.rand(self.trials, 2)).long()  # (T, 2) left, top
            crops = torch.cat([offset, offset + size], dim=1)  # (T, 4) xyxy
            inside = ((crops[:, None, :2] < centers) & (centers < crops[:, None, 2:])).all(-1)  # (T, N) centre in crop
            ious = box_iou(crops.to(boxes.dtype), boxes).masked_fill(~inside, -1.0)
            valid = (
                (aspect >= self.min_aspect_ratio)
                & (aspect <= self.max_aspect_ratio)
                & (size > 0).all(1)
                & inside.any(1)
                & (ious.amax(1) >= min_iou)
            )
            if valid.any():
                t = int(valid.int().argmax())  # the first trial that passes, as the sequential loop takes
                left, top = offset[t].tolist()
                crop_width, crop_height = size[t].tolist()
                return {"top": top, "left": left, "height": crop_height, "width": crop_width,
                        "is_within_crop_area": inside[t]}  # fmt: skip
