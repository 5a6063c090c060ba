"""``alignflow train-segmenter`` and ``alignflow segment``: end to end on real pairs, and one-line errors (exit 2)."""

import json
from pathlib import Path

import pytest
import yaml

from alignflow.cli import main
from alignflow.runs.events import read_events


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kvasir, make_pairs, tiny_model) -> Path:
    """A 2-step tiny run trained through the CLI (model overrides from --config)."""
    root = tmp_path_factory.mktemp("cli")
    make_pairs(kvasir, root / "data", 4)
    config = root / "seg.yaml"
    config.write_text(yaml.safe_dump({"model": tiny_model, "batch_size": 2}))
    code = main(["train-segmenter", "--config", str(config), "--source", str(root / "data"), "--out", str(root / "run"),
                 "--steps", "3", "--log-every", "1", "--device", "cpu"])
    assert code == 0
    return root


def test_log_every_flag_sets_the_progress_interval(trained):
    progress = [e["step"] for e in read_events(trained / "run") if e["type"] == "progress"]
    assert progress == [1, 2, 3]


def test_train_then_segment_writes_every_output(trained, capsys):
    out = trained / "seg"
    code, _ = run(capsys, "segment", "--segmenter", str(trained / "run"), "--images", str(trained / "data" / "images"),
                  "--out", str(out), "--num-samples", "3", "--steps", "2", "--limit", "2", "--device", "cpu")
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 3 and manifest["num_steps"] == 2 and len(manifest["files"]) == 2
    stem = manifest["files"][0]["stem"]
    for name in (f"labels/{stem}.png", f"samples/{stem}.tif", f"posterior/{stem}.tif",
                 *(f"uncertainty/{stem}_{kind}.{ext}" for kind in ("staple", "variance", "entropy") for ext in ("tif", "png"))):
        assert (out / name).is_file(), name
    # A second segmentation into the same folder is refused rather than mixed with the first.
    code, line = run(capsys, "segment", "--segmenter", str(trained / "run"), "--images", str(trained / "data" / "images"),
                     "--out", str(out), "--device", "cpu")
    assert code == 2 and str(out) in line


def test_train_segmenter_missing_dataset(tmp_path, capsys):
    code, line = run(capsys, "train-segmenter", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert code == 2 and "nope" in line


def test_train_segmenter_image_without_mask(tmp_path, kvasir, make_pairs, capsys):
    make_pairs(kvasir, tmp_path / "d", 3)
    victim = sorted((tmp_path / "d" / "masks").iterdir())[0]
    victim.unlink()
    code, line = run(capsys, "train-segmenter", "--source", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert code == 2 and victim.stem in line


def test_train_segmenter_bad_config_values(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("stepz: 3\n")
    code, line = run(capsys, "train-segmenter", "--config", str(config), "--out", str(tmp_path / "r"))
    assert code == 2 and "stepz" in line
    code, line = run(capsys, "train-segmenter", "--source", str(tmp_path), "--out", str(tmp_path / "r"), "--resolution", "100")
    assert code == 2 and "resolution" in line
    code, line = run(capsys, "train-segmenter", "--source", str(tmp_path), "--out", str(tmp_path / "r"), "--steps", "0")
    assert code == 2 and "--steps" in line


def test_train_segmenter_refuses_an_existing_run(trained, capsys):
    code, line = run(capsys, "train-segmenter", "--source", str(trained / "data"), "--out", str(trained / "run"), "--device", "cpu")
    assert code == 2 and "--resume" in line


def test_segment_errors_name_the_input(trained, tmp_path, capsys):
    images = str(trained / "data" / "images")
    code, line = run(capsys, "segment", "--segmenter", str(tmp_path), "--images", images, "--out", str(tmp_path / "o"))
    assert code == 2 and str(tmp_path) in line and "segmenter" in line
    (tmp_path / "empty").mkdir()
    code, line = run(capsys, "segment", "--segmenter", str(trained / "run"), "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 2 and "empty" in line
    code, line = run(capsys, "segment", "--segmenter", str(trained / "run"), "--images", images, "--out", str(tmp_path / "o"), "--num-samples", "0")
    assert code == 2 and "--num-samples" in line
    code, line = run(capsys, "segment", "--images", images, "--out", str(tmp_path / "o"))
    assert code == 2 and "--segmenter" in line
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    code, line = run(capsys, "segment", "--segmenter", str(trained / "run"), "--images", str(broken), "--out", str(tmp_path / "o"))
    assert code == 2 and "broken.png" in line
