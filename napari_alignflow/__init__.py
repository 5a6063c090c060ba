"""napari-alignflow: the napari front end of the AlignFlow engine (widgets arrive with the plugin issue)."""

__version__ = "0.1.0"
