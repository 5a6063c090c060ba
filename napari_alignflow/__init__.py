"""napari-alignflow: the napari front end of the AlignFlow engine (readers, the phantom sample, References, Training and Synthetic masks panels)."""

__version__ = "0.1.0"
