"""File readers for napari: segmentation dataset folders, DICOM and NIfTI (kept out of the engine on purpose)."""
