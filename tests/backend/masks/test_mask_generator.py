"""The mask generator on real masks: its two data spaces round-trip real masks, it trains, resumes and loads."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignflow.data import load_masks, scan_dataset
from alignflow.errors import InputError
from alignflow.masks.model import MaskGeneratorConfig, build_mask_codec
from alignflow.masks.training import MaskTrainConfig, flipped_copies, train_mask_generator
from alignflow.runs.events import read_events

TINY = {"resolution": 64, "pixel_size": 32, "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "context_tokens": 2}


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a > 0) & (b > 0)).sum() / ((a > 0) | (b > 0)).sum().clamp_min(1))


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_both_spaces_represent_real_masks_faithfully(space, kvasir, shared_data):
    """Encoding a real mask and decoding it (no generator involved) must give the mask back after thresholding."""
    for folder, num_classes in ((kvasir, 2), (shared_data / "Drishti-GS_roi", 3)):
        masks = load_masks([p.mask for p in scan_dataset(folder).pairs[:6]], 128)
        codec = build_mask_codec(MaskGeneratorConfig(space=space, num_classes=num_classes), torch.device("cpu"))
        with torch.no_grad():
            grey = codec.decode(codec.encode(masks))
        assert grey.shape == masks.shape
        ids = (grey * (num_classes - 1)).round().clamp(0, num_classes - 1).long()
        for c in range(1, num_classes):
            assert iou(ids >= c, masks >= c) > 0.9, (folder.name, space, c)


def test_config_rejects_bad_values():
    with pytest.raises(InputError, match="space"):
        MaskGeneratorConfig.from_dict({"space": "voxel"})
    with pytest.raises(InputError, match="pixel_size"):
        MaskGeneratorConfig.from_dict({"space": "pixel", "pixel_size": 30})
    with pytest.raises(InputError, match="unknown"):
        MaskGeneratorConfig.from_dict({"layers": 3})
    with pytest.raises(InputError, match="steps"):
        MaskTrainConfig(source="x", out="y", steps=0).validate()


def test_flips_keep_class_ids_and_quadruple_the_masks():
    masks = torch.tensor([[[0, 1], [2, 0]]])
    flipped = flipped_copies(masks)
    assert flipped.shape[0] == 4 and set(flipped.unique().tolist()) == {0, 1, 2}
    assert torch.equal(flipped[3], masks[0].flip(0, 1))


def config(source: Path, out: Path, steps: int, space: str = "latent") -> MaskTrainConfig:
    return MaskTrainConfig(source=str(source), out=str(out), steps=steps, batch_size=4, lr=1e-3, device="cpu",
                           checkpoint_every=5, preview_every=100, log_every=1, generator={**TINY, "space": space})


def test_training_lowers_the_loss_and_resume_matches_an_uninterrupted_run(tmp_path, shared_data, make_pairs):
    source = tmp_path / "drishti"
    make_pairs(shared_data / "Drishti-GS_roi", source, 8)
    whole = train_mask_generator(config(source, tmp_path / "whole", 10, "pixel"))
    losses = [e["loss"] for e in read_events(tmp_path / "whole") if e["type"] == "progress" and e.get("stage") == "masks"]
    assert len(losses) == 10 and sum(losses[-3:]) < sum(losses[:3])
    assert (tmp_path / "whole" / "previews").is_dir()
    train_mask_generator(config(source, tmp_path / "split", 5, "pixel"))
    resumed = train_mask_generator(config(source, tmp_path / "split", 10, "pixel"), resume=True)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    with pytest.raises(InputError, match="--resume"):
        train_mask_generator(config(source, tmp_path / "whole", 10, "pixel"))
