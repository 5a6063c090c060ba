"""Data layer: image/mask I/O, dataset scanning and loading, reference selection and the bundled phantom sample."""

# Lazy (SPEC 1): importing a submodule, e.g. the CLI's commands module, does not import torch.
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "dataset": ["DatasetError", "FLIPS", "all_flips", "flipped", "Pair", "SegmentationFolder", "load_masks", "load_pairs", "mask_to_rgb", "one_hot", "random_flips", "rgb_to_mask", "scan_dataset", "split_indices"],
        "io": ["IMAGE_SUFFIXES", "list_images", "mask_values_to_ids", "read_image", "read_mask", "read_size", "resize_image", "resize_mask", "resize_to", "to_tensor", "to_uint8", "write_image", "write_mask"],
        "phantom": ["ScannerShift", "apply_scanner_shift", "cache_root", "make_phantom", "phantom_dir"],
        "references": ["load_reference_images", "select_references"],
        "shares": ["equal_share_repeats", "export_copies"],
    },
)
