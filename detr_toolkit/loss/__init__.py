"""Training losses: Hungarian matching of queries to objects, and the RT-DETR criterion built on it."""

from .criterion import DetectionCriterion
from .matcher import HungarianMatcher

__all__ = ["DetectionCriterion", "HungarianMatcher"]
