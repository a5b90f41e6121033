"""Segmentation heads, the segmenter that joins them to a backbone, and LoRA set-up with peft."""

from emfm.models.heads import HEADS, create_head, head_names
from emfm.models.segmenter import Segmenter

__all__ = ["HEADS", "Segmenter", "create_head", "head_names"]
