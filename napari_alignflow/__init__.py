"""napari-alignflow: the napari front end of the AlignFlow engine: readers (dataset folders, folders of scans, DICOM
series, NIfTI), the phantom sample, and one dock whose tabs hold the guided flow and every panel (References,
Train, Masks, Generate, Curate, Evaluate, Segment, Export)."""

__version__ = "0.1.0"
