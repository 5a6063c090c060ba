"""The mask-fidelity metric on real Kvasir-SEG images with a real (small) evaluator."""

import json
import shutil

import numpy as np
import pytest
import torch

from alignflow.data import read_mask, write_mask
from alignflow.errors import InputError
from alignflow.fidelity.metric import evaluate_fidelity, overlap_scores
from alignflow.fidelity.segmenter import Segmenter, SegmenterConfig, check_independent, load_segmenter, save_segmenter


def shifted_masks(dataset, out, fraction=0.25):
    """Every mask moved right by ``fraction`` of its width (zeros enter on the left)."""
    out.mkdir(parents=True)
    for path in sorted((dataset / "masks").iterdir()):
        mask = read_mask(path)
        step = int(round(mask.shape[1] * fraction))
        moved = np.zeros_like(mask)
        moved[:, step:] = mask[:, :-step]
        write_mask(out / path.name, moved)
    return out


def test_overlap_scores_on_known_cases():
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, 2:6, 2:6] = 1
    half = torch.zeros_like(mask)
    half[0, 2:6, 2:4] = 1
    empty = torch.zeros_like(mask)
    dice, iou = overlap_scores(torch.cat([mask, half, empty, empty]), torch.cat([mask, mask, mask, empty]), 2)
    assert dice.tolist() == pytest.approx([1.0, 2 * 8 / (8 + 16), 0.0, 1.0])
    assert iou.tolist() == pytest.approx([1.0, 0.5, 0.0, 1.0])


def test_real_images_score_exactly_the_ceiling_and_shifted_masks_clearly_lower(tmp_path, evaluator, kvasir_eight):
    generated = tmp_path / "generated"
    shutil.copytree(kvasir_eight / "images", generated)  # the real image in place of a generated one
    report = evaluate_fidelity(evaluator, generated, masks=kvasir_eight)
    assert report["ceiling"]["dataset"] == str(kvasir_eight)
    assert report["dice"] == report["ceiling"]["dice"] and report["iou"] == report["ceiling"]["iou"]
    assert report["ratio_to_ceiling"] == 1.0 and report["evaluator_kind"] == "source-only"
    assert len(report["per_image"]) == 8 and report["ceiling"]["dice"] > 0.6
    moved = evaluate_fidelity(evaluator, generated, masks=shifted_masks(kvasir_eight, tmp_path / "shifted"), ceiling=kvasir_eight)
    assert moved["dice"] < report["dice"] - 0.25, (moved["dice"], report["dice"])
    assert moved["ceiling"]["dice"] == report["ceiling"]["dice"]


def test_missing_masks_are_named(tmp_path, evaluator, kvasir_eight):
    generated = tmp_path / "generated"
    shutil.copytree(kvasir_eight / "images", generated)
    masks = tmp_path / "masks"
    shutil.copytree(kvasir_eight / "masks", masks)
    next(masks.iterdir()).unlink()
    with pytest.raises(InputError, match="without one"):
        evaluate_fidelity(evaluator, generated, masks=masks)
    with pytest.raises(InputError, match="--masks"):
        evaluate_fidelity(evaluator, generated)


def test_a_checkpoint_that_does_not_match_its_config_is_named(tmp_path, evaluator):
    broken = tmp_path / "broken"
    shutil.copytree(evaluator, broken)
    values = json.loads((broken / "segmenter.json").read_text())
    values["channels"] = [8, 16, 32, 128]
    (broken / "segmenter.json").write_text(json.dumps(values))
    with pytest.raises(InputError) as error:
        load_segmenter(broken)
    assert "model.safetensors" in str(error.value) and "mis-shaped" in str(error.value)
    values["_info"]["model"] = "medflowseg"
    (broken / "segmenter.json").write_text(json.dumps(values))
    with pytest.raises(InputError, match="train-evaluator"):
        load_segmenter(broken)
    with pytest.raises(InputError, match="segmenter folder"):
        load_segmenter(tmp_path)


def test_evaluator_must_differ_from_the_reward_segmenter(tmp_path, evaluator):
    judge = load_segmenter(evaluator)
    same = load_segmenter(save_segmenter(tmp_path / "same", judge.model, {"kind": "reward"}))
    with pytest.raises(InputError, match="architecture"):
        check_independent(judge, same)
    other = Segmenter(SegmenterConfig(architecture="basic-unet", channels=[4, 4, 8, 8, 16, 4], resolution=64))
    shares_data = load_segmenter(save_segmenter(tmp_path / "other", other, {"kind": "reward", "training_images": judge.info["training_images"][:2]}))
    with pytest.raises(InputError, match="shared"):
        check_independent(judge, shares_data)
    check_independent(judge, load_segmenter(save_segmenter(tmp_path / "fine", other, {"kind": "reward", "training_images": []})))
