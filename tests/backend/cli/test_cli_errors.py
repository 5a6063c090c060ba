"""Bad input: one line on stderr naming the file or parameter, exit code 2, nothing already written damaged."""

from pathlib import Path

import numpy as np
from PIL import Image

from alignflow.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def train_args(source: Path, out: Path) -> list[str]:
    return ["train", "--source", str(source), "--out", str(out), "--steps", "1", "--device", "cpu"]


def test_missing_folder(tmp_path, capsys):
    code, line = run(capsys, *train_args(tmp_path / "nope", tmp_path / "run"))
    assert code == 2 and "nope" in line


def test_image_without_mask(tmp_path, kvasir, capsys, make_pairs):
    data = tmp_path / "d"
    make_pairs(kvasir, data, 3)
    victim = sorted((data / "masks").iterdir())[0]
    victim.unlink()
    code, line = run(capsys, *train_args(data, tmp_path / "run"))
    assert code == 2 and victim.stem in line


def test_mask_size_mismatch(tmp_path, kvasir, capsys, make_pairs):
    data = tmp_path / "d"
    make_pairs(kvasir, data, 3)
    victim = sorted((data / "masks").iterdir())[1]
    Image.open(victim).resize((40, 30)).save(victim)
    code, line = run(capsys, *train_args(data, tmp_path / "run"))
    assert code == 2 and victim.name in line


def test_unexpected_mask_values(tmp_path, kvasir, capsys, make_pairs):
    data = tmp_path / "d"
    make_pairs(kvasir, data, 3)
    victim = sorted((data / "masks").iterdir())[2]
    mask = np.array(Image.open(victim))
    mask[:5, :5] = 128
    Image.fromarray(mask).save(victim)
    code, line = run(capsys, *train_args(data, tmp_path / "run"))
    assert code == 2 and victim.name in line and "128" in line


def test_unreadable_image(tmp_path, kvasir, capsys, make_pairs):
    data = tmp_path / "d"
    make_pairs(kvasir, data, 3)
    victim = sorted((data / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    code, line = run(capsys, *train_args(data, tmp_path / "run"))
    assert code == 2 and victim.name in line


def test_bad_config_file_and_unknown_key(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("stepz: 3\n")
    code, line = run(capsys, "train", "--config", str(config), "--source", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 2 and "stepz" in line
    config.write_text("steps: [1\n")
    code, line = run(capsys, "train", "--config", str(config))
    assert code == 2 and "c.yaml" in line


def test_unavailable_device(tmp_path, kvasir, capsys, make_pairs):
    code, line = run(capsys, "train", "--source", str(kvasir), "--out", str(tmp_path / "r"), "--device", "cuda:3")
    assert code == 2 and "--device" in line


def test_existing_run_folder_is_not_overwritten_without_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "generator").mkdir(parents=True)  # a finished run (a run with a checkpoint is refused the same way)
    (run_dir / "config.json").write_text("{}")
    code, line = run(capsys, "train", "--source", str(tmp_path), "--out", str(run_dir), "--device", "cpu")
    assert code == 2 and "--resume" in line
    assert (run_dir / "config.json").read_text() == "{}"
