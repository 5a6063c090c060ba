"""Downstream evaluation: train a segmenter (UNet, SegFormer or MedFlowSeg) on real pairs, with or without synthetic
ones, and score it on labelled test sets (Dice, IoU, HD95). See docs/downstream.md."""

from .config import DownstreamConfig
from .evaluate import evaluate_segmentation
from .metrics import SegmentationScores, score_segmentations, summarize_scores

__all__ = ["DownstreamConfig", "SegmentationScores", "evaluate_segmentation", "score_segmentations", "summarize_scores"]
