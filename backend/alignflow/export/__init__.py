"""Export of real and generated image-mask pairs for downstream training: nnU-Net v2 raw (+ MONAI datalist),
plain folders and OME-Zarr, each with a manifest that makes every synthetic image regenerable."""

from .exporter import FORMATS, export_dataset, stale_temporary_folders
from .labels import LabelMap
from .manifest import MANIFEST_FILE

__all__ = ["FORMATS", "MANIFEST_FILE", "LabelMap", "export_dataset", "stale_temporary_folders"]
