"""Translation of real source images (SDEdit-style) through the one generation path, on real Kvasir-SEG pairs with a
tiny generator trained a few steps: s = 0 is the encoded-decoded source, s = 1 is generation from noise, and in
between the mask region keeps the source's low frequencies."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alignflow.cli import main
from alignflow.data import load_pairs, read_image, read_mask, scan_dataset
from alignflow.flow_matching import tunable_jump
from alignflow.generator.config import TrainConfig
from alignflow.generator.sampling import generate_images, load_generator, translation_start_step
from alignflow.generator.training import Trainer, train
from alignflow.runs.events import read_events

TINY_GENERATOR = {"resolution": 32, "num_layers": 2, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}
STEPS = 8


@pytest.fixture(scope="module")
def kvasir_six(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir6")
    make_pairs(kvasir, root, 6)
    return root


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, kvasir_six) -> Path:
    out = tmp_path_factory.mktemp("translation") / "s1"
    return train(TrainConfig(source=str(kvasir_six), out=str(out), steps=6, batch_size=2, device="cpu",
                             checkpoint_every=100, preview_every=100, log_every=10, generator=dict(TINY_GENERATOR)))


@pytest.fixture(scope="module")
def generator(stage1):
    return load_generator(stage1, torch.device("cpu"))


@pytest.fixture(scope="module")
def real(kvasir_six, generator) -> tuple[torch.Tensor, torch.Tensor]:
    return load_pairs(scan_dataset(kvasir_six), generator.config.resolution)


def test_strength_zero_returns_the_encoded_decoded_source(generator, real):
    images, masks = real
    translated = generate_images(generator, masks, source_images=images, strength=0.0, num_steps=STEPS)
    with torch.no_grad():
        expected = generator.codec.decode(generator.codec.encode_images(images)).clamp(0, 1)
    assert torch.allclose(translated, expected, atol=1e-6)
    assert not torch.allclose(translated, generate_images(generator, masks, num_steps=STEPS), atol=1e-2)


def test_strength_one_is_generation_from_noise_with_the_same_seed(generator, real):
    images, masks = real
    generated = generate_images(generator, masks, seed=3, num_steps=STEPS, batch_size=4)
    translated = generate_images(generator, masks, source_images=images, strength=1.0, seed=3, num_steps=STEPS,
                                 batch_size=4)
    assert torch.equal(translated, generated)


def _low_frequencies(images: torch.Tensor) -> torch.Tensor:
    """Block means over 8 x 8 pixels (a quarter of the 32 px side), brought back to full size."""
    return F.interpolate(F.avg_pool2d(images, 8), scale_factor=8, mode="nearest")


def test_intermediate_strength_keeps_the_mask_regions_low_frequencies(generator, real):
    images, masks = real
    assert translation_start_step(0.5, STEPS) == 4
    translated = generate_images(generator, masks, source_images=images, strength=0.5, num_steps=STEPS)
    generated = generate_images(generator, masks, num_steps=STEPS)
    inside = (masks > 0).unsqueeze(1).float()
    assert (inside.flatten(1).sum(1) > 0).all()

    def distance(candidates: torch.Tensor) -> torch.Tensor:  # per image, mean over the mask region
        gap = (_low_frequencies(candidates) - _low_frequencies(images)).abs() * inside
        return gap.flatten(1).sum(1) / (3 * inside.flatten(1).sum(1))

    near, far = distance(translated), distance(generated)
    assert float(near.mean()) < 0.8 * float(far.mean())
    assert int((near < far).sum()) >= 5  # of 6 real images
    # and s = 0 (the encoded-decoded source: the autoencoder's own loss) is closer still
    kept = generate_images(generator, masks, source_images=images, strength=0.0, num_steps=STEPS)
    assert float(distance(kept).mean()) < float(near.mean())


def test_strength_is_checked_and_translation_needs_source_images(generator, real):
    from alignflow.errors import InputError

    images, masks = real
    with pytest.raises(InputError, match="--strength"):
        generate_images(generator, masks, source_images=images, strength=1.5)
    with pytest.raises(InputError, match="--from-images"):
        generate_images(generator, masks, strength=0.5)


def test_generate_from_images_writes_translated_pairs_with_their_provenance(tmp_path, stage1, kvasir_six, capsys):
    out = tmp_path / "translated"
    code = main(["generate", "--generator", str(stage1), "--masks", str(kvasir_six), "--out", str(out), "--from-images",
                 "--strength", "0.5", "--steps", "4", "--limit", "3", "--seed", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((out / "manifest.json").read_text())
    pairs = scan_dataset(kvasir_six).pairs[:3]
    assert [row["stem"] for row in rows] == [pair.stem for pair in pairs]
    for row, pair in zip(rows, pairs):
        assert row["method"] == "translate" and row["strength"] == 0.5 and row["start_step"] == 2
        assert row["source_image"] == str(pair.image) and row["source_mask"] == str(pair.mask)
        assert read_image(out / "images" / f"{pair.stem}.png").shape[:2] == read_mask(pair.mask).shape
    assert [row["seed"] for row in rows] == [2, 3, 4]


@pytest.mark.parametrize(("extra", "flag"), [
    (["--from-images", "--strength", "1.5"], "--strength"),
    (["--from-images", "--strength", "-0.1"], "--strength"),
    (["--strength", "0.5"], "--strength"),
])
def test_bad_strength_is_a_one_line_error_naming_the_flag(tmp_path, kvasir_six, extra, flag, capsys):
    code = main(["generate", "--generator", str(tmp_path / "none"), "--masks", str(kvasir_six), "--out",
                 str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_from_images_needs_a_dataset_folder(tmp_path, stage1, kvasir_six, capsys):
    code = main(["generate", "--generator", str(stage1), "--masks", str(kvasir_six / "masks"), "--out",
                 str(tmp_path / "out"), "--from-images", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "--masks" in err and "images/" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ stage 2 in translation mode


@pytest.fixture(scope="module")
def references(tmp_path_factory, clinicdb) -> Path:
    root = tmp_path_factory.mktemp("refs")
    for image in sorted((clinicdb / "images").glob("*.png"))[100:104]:
        shutil.copy(image, root / image.name)
    return root


def stage2_config(source: Path, out: Path, stage1: Path, references: Path, **extra) -> TrainConfig:
    return TrainConfig(source=str(source), out=str(out), stage=2, init=str(stage1), references=str(references),
                       num_references=3, steps=2, batch_size=2, align_batch_size=2, device="cpu", checkpoint_every=100,
                       preview_every=100, log_every=1, **extra)


@pytest.mark.parametrize("strength", [0.0, 1.2, 0.02, True, "0.5"])
def test_translation_strength_is_checked(strength):
    from alignflow.errors import InputError

    config = TrainConfig(source="data", out="run", stage=2, init="s1", references="refs", translation_strength=strength)
    with pytest.raises(InputError, match="translation_strength"):
        config.validate()


def test_translation_mode_grades_one_step_from_the_pairs_own_noised_latents(tmp_path, kvasir_six, stage1, references):
    trainer = Trainer(stage2_config(kvasir_six, tmp_path / "s2", stage1, references, translation_strength=0.5))
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    trainer._prepare()
    torch.manual_seed(0)
    steps = [trainer._alignment_loss() for _ in range(4)]
    assert all(step.start_step == 10 and 10 <= step.k <= 19 for step in steps)  # k0 = (1 - 0.5) * 20
    step = steps[-1]
    assert step.x_s.grad_fn is None and not step.x_s.requires_grad
    # The gradient of the whole alignment loss is the gradient of the graded step alone, taken from x_s.
    model = trainer.model
    model.zero_grad(set_to_none=True)
    step.loss.backward()
    full = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    masks = trainer.mask_latents[step.index]
    alone = trainer.codec.decode(tunable_jump(model, step.x_s, step.k / 20, masks).float())
    trainer.reward(alone.float()).backward()
    assert full and full.keys() == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(full[name], p.grad, atol=1e-6), name
    # The trajectory starts from the chosen pairs' own latents: with k0 = 19 no frozen step runs, and x_s minus
    # 0.95 x1 of those pairs is the 0.05 eps of Eq. 2 (standard normal once divided by 0.05); other pairs' x1 is not.
    trainer.translation_start = translation_start_step(0.05, 20)
    step = trainer._alignment_loss()
    assert step.k == step.start_step == 19
    own = (step.x_s - 0.95 * trainer.image_latents[step.index]) / 0.05
    other = (step.x_s - 0.95 * trainer.image_latents[(step.index + 1) % len(trainer.image_latents)]) / 0.05
    assert abs(float(own.std()) - 1.0) < 0.1 and abs(float(own.mean())) < 0.1
    assert float(other.std()) > 3.0


def test_align_in_translation_mode_records_its_strength(tmp_path, kvasir_six, stage1, references, capsys):
    code = main(["align", "--init", str(stage1), "--source", str(kvasir_six), "--references", str(references),
                 "--num-references", "3", "--out", str(tmp_path / "s2"), "--steps", "2", "--batch-size", "2",
                 "--align-batch-size", "2", "--translation-strength", "0.3", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    progress = [e for e in read_events(tmp_path / "s2") if e["type"] == "progress" and e.get("stage") == 2]
    assert progress and all(e["k"] >= 14 for e in progress)  # k0 = round(0.7 * 20)
    info = json.loads((tmp_path / "s2" / "generator" / "generator.json").read_text())["_info"]
    assert info["translation_strength"] == 0.3
