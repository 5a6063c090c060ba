"""Export of real and generated image-mask pairs for downstream training: nnU-Net v2 raw (+ MONAI datalist),
plain folders and OME-Zarr, each with a manifest that makes every synthetic image regenerable."""

# Lazy (SPEC 1): importing a submodule, e.g. the CLI's commands module, does not import torch.
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "exporter": ["FORMATS", "export_dataset", "stale_temporary_folders"],
        "labels": ["LabelMap"],
        "manifest": ["MANIFEST_FILE", "copies_summary"],
    },
)
