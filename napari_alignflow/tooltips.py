"""Every form label and tooltip of the plugin, in one place (as micro-sam keeps its tooltips), so the wording of a
setting is the same in every panel and a reviewer reads them all at once.

Keys are ``panel.field``; :func:`napari_alignflow.widgets.common.form` looks each row's tooltip up here.
"""

from __future__ import annotations

TOOLTIPS: dict[str, str] = {
    # ------------------------------------------------------------------ shared
    "device": "Where the work runs: auto picks a GPU when there is one (CUDA or Apple MPS), else the CPU",
    "seed": "The same seed with the same settings gives the same result; image i uses seed + i",
    # ------------------------------------------------------------------ guide
    "guide.source": "Your labelled dataset: a folder with images/ and masks/ (files matched by name)",
    "guide.target": "An image layer of scans from the scanner or hospital the segmentation must work on (no masks needed)",
    "guide.work": "A folder for this job: references, both training runs, generated pairs (created if needed)",
    "guide.steps1": "Stage 1 learns the source domain; a few thousand steps on a GPU, a few hundred for a first look on a CPU",
    "guide.steps2": "Stage 2 aligns the stage-1 generator to the references; a few hundred steps are typical",
    "guide.references": "How many target scans the advisor picks as references (the paper uses 10)",
    "guide.preview": "How many source masks to generate images for, to check the result before curating",
    # ------------------------------------------------------------------ training
    "training.source": "Your labelled dataset folder (images/ + masks/)",
    "training.out": "A new, empty folder: the run writes checkpoints, previews and the trained generator there",
    "training.stage": "Stage 1 learns the source domain; stage 2 aligns a stage-1 generator to the references",
    "training.init": "Stage 2 starts from this stage-1 generator (its run folder)",
    "training.references": "A folder of target-domain images (References tab > Save as folder)",
    "training.steps": "Optimisation steps; Resume continues a run up to the number set here",
    "training.batch_size": "Pairs per step; larger is smoother and needs more memory",
    "training.max_pairs": "Use only the first N pairs of the dataset (0 = all): a quick first run encodes and trains on fewer",
    "training.num_references": "How many of the reference images stage 2 uses (0 = all); the paper uses 10, at least a few",
    "training.t_is": "Tunable steps start at this Euler step of 20: lower lets the reward shape the image earlier "
                     "(the compact model aligned best at 5; the paper's SD3 uses 18)",
    "training.w_align": "Weight of the alignment (MMD) loss against the denoising loss (Eq. 3); 1 is the paper's",
    "training.reward": "How generated and reference features are compared: MMD (the paper) or symmetric KL",
    "training.translation": "Stage 2 in translation mode: trajectories start from the real source image noised to "
                            "1 - strength instead of from noise (0 = off); the generator then suits "
                            "'generate --from-images --strength' (needs an engine with translation)",
    "training.run_on": "This computer, or an alignflow serve job server (a lab GPU machine)",
    "training.server": "The job server's address, e.g. https://gpu.lab.example:8765 (or a tunnel to it)",
    "training.token": "The server's token: shown as dots, kept only in this field and sent only to that server",
    "training.options": "Optional: a YAML or JSON file of further options of alignflow train/align (same names)",
    # ------------------------------------------------------------------ masks
    "masks.generator": "A mask generator's run folder (alignflow train-masks)",
    "masks.count": "How many masks to draw",
    "masks.steps": "Euler steps per mask: fewer is faster and rougher",
    "masks.num_classes": "K: classes including background (set from the generator)",
    "masks.threshold": "Grey level between two classes that decides which one a pixel gets",
    "masks.sigma": "Gaussian blur before thresholding, in pixels (0 = off)",
    "masks.opening": "Morphological opening radius: removes thin spurs and specks (0 = off)",
    "masks.closing": "Morphological closing radius: closes small gaps (0 = off)",
    "masks.min_area": "Blobs smaller than this many pixels are removed (0 = off); the range follows the mask size",
    # ------------------------------------------------------------------ generation
    "generation.generator": "A trained image generator: a training run folder or its generator/ folder",
    "generation.masks": "A Labels layer of masks: a dataset folder's masks, synthetic masks, or masks drawn by hand",
    "generation.which": "Every mask of the layer, or only the one the slider shows",
    "generation.steps": "Euler steps per image: 28 is a good default; fewer is faster and rougher",
    "generation.guidance": "Classifier-free guidance: higher follows the mask more strictly, 1 = no guidance",
    "generation.evaluator": "Optional: a mask-fidelity evaluator (alignflow train-evaluator); each image then gets a "
                            "fidelity score (Dice of the evaluator's segmentation to the mask) for curation",
    "generation.candidates": "With an evaluator: draw this many images per mask and keep the most faithful (best of K)",
    # ------------------------------------------------------------------ curation
    "curation.table": "Generated pairs of every generation: Up/Down to move, A to accept, R to reject, "
                      "Space to toggle; accepted pairs go to the export",
    # ------------------------------------------------------------------ evaluation
    "evaluation.references": "A folder of target-domain images to compare the generated images with "
                             "(the references saved for stage 2, or more target scans)",
    "evaluation.source": "Optional: the source dataset; its distance to the target is the baseline to beat",
    "evaluation.evaluator": "Optional: a mask-fidelity evaluator; adds each image's fidelity as a column",
    "evaluation.segmenter": "Optional: a MedFlowSeg (alignflow train-segmenter); adds each image's uncertainty score "
                            "(how much a small ensemble disagrees on it)",
    "evaluation.size": "Images are compared at this square size",
    "evaluation.labelled": "Optional: a few labelled target scans (images/ + masks/): a quick segmenter is trained "
                           "with and without the accepted synthetic pairs and scored on them",
    "evaluation.downstream_steps": "Training steps of each small segmenter (two per run); 1000 is what the benchmarks' judge "
                                   "needed on 100 polyp pairs (its source validation Dice stopped rising at 400)",
    "evaluation.downstream_resolution": "Square size the quick segmenters train and score at",
    "evaluation.downstream_runs": "Seeds: each trains a segmenter without and with the accepted pairs; the gain is their "
                                  "paired difference, with a standard error. On our polyp benchmark 3 runs on 30 labelled "
                                  "scans from many recordings chose among four generators within 0.005 Dice of the best on average (a random choice: 0.015)",
    # ------------------------------------------------------------------ segmentation
    "segmentation.segmenter": "A trained MedFlowSeg: a train-segmenter run folder or its segmenter/ folder",
    "segmentation.image": "An image layer to segment (a single scan or a stack)",
    "segmentation.which": "Every image of the layer, or only the one the slider shows",
    "segmentation.steps": "Euler steps per sample (paper: 50)",
    "segmentation.samples": "Ensemble size M: samples per image, fused into one label map (paper: 10)",
    "segmentation.fusion": "How the samples become one label map: STAPLE (the paper) or a majority vote",
    "segmentation.uncertainty": "Which uncertainty map to show; the per-image score is the mean of this map",
    # ------------------------------------------------------------------ export
    "export.generated": "The accepted pairs of the Curate tab (every generation, not only the last)",
    "export.real": "Your labelled dataset folder, exported beside the generated pairs",
    "export.target": "Target-domain pairs you labelled (e.g. the references, a Labels layer over each saved as masks/): "
                     "exported as target_* cases",
    "export.share": "Repeat cases (hard links) so that a uniform draw, as nnU-Net makes, takes this share from the "
                    "generated and target pairs, each set an equal part; 0.25 is what the benchmarks used",
    "export.format": "nnU-Net v2 raw (destination named DatasetXXX_Name), plain images/ + masks/ folders, or OME-Zarr",
    "export.out": "A new folder to export to",
    "export.names": "Optional class names, background first, e.g. background, polyp",
    "export.overwrite": "Replace an existing destination once the new export is complete (without it, it is refused)",
}


def tooltip(key: str) -> str:
    """The tooltip of ``key`` (``panel.field`` or a shared ``field``); an unknown key is a programming error."""
    if key in TOOLTIPS:
        return TOOLTIPS[key]
    shared = key.rsplit(".", 1)[-1]
    return TOOLTIPS[shared]
