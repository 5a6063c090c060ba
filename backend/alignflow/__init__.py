"""AlignFlow engine: few-shot, distribution-aligned flow-matching augmentation of segmentation datasets.

Importable without Qt or napari; the napari plugin and the ``alignflow`` command line are thin callers of it.
"""

__version__ = "0.1.0"
