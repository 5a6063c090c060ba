"""Downstream evaluation: train a segmenter (UNet, SegFormer or MedFlowSeg) on real pairs, with or without synthetic
ones, and score it on labelled test sets (Dice, IoU, HD95). See docs/downstream.md."""

# Lazy (SPEC 1): importing a submodule, e.g. the CLI's commands module, does not import torch.
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "compare": ["compare_with_synthetic"],
        "config": ["DownstreamConfig"],
        "evaluate": ["evaluate_segmentation"],
        "metrics": ["SegmentationScores", "score_segmentations", "summarize_scores"],
    },
)
