"""napari-alignflow: the napari front end of the AlignFlow engine (readers, the phantom sample, and the References,
Training, Synthetic masks, Generate images, Segmentation and Export panels)."""

__version__ = "0.1.0"
