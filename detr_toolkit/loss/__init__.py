"""Training losses: Hungarian matching of queries to objects, and the criterion built on it.

A model config names its family's loss in a `loss` section (the keyword arguments of `DetectionCriterion`,
with the matcher's costs under `matcher`), so the trainer builds whatever the config asks for and never asks
which family it trains.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..nn.validation import CONSTRUCTION_ERRORS, check_arguments
from .criterion import DetectionCriterion
from .matcher import HungarianMatcher


def build_criterion(section: dict[str, Any] | None, num_classes: int) -> DetectionCriterion:
    """The criterion a model config's `loss` section describes (RT-DETR's defaults where it is absent);
    ConfigError naming the key for anything else."""
    section = dict(section or {})
    check_arguments(DetectionCriterion, section, "loss", derived={"num_classes"})
    check_arguments(HungarianMatcher, section.get("matcher") or {}, "loss.matcher")
    try:
        return DetectionCriterion(num_classes, **section)
    except CONSTRUCTION_ERRORS as error:
        raise ConfigError(f"loss: {error}") from None


__all__ = ["DetectionCriterion", "HungarianMatcher", "build_criterion"]
