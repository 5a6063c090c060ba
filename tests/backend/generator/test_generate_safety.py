"""``alignflow generate`` (issue 18): it never replaces its inputs or a run, an existing output only with
--overwrite; ``--config`` alone is enough and its values win over defaults; bad values are one line, exit 2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from alignflow.cli import main
from alignflow.generator.config import TrainConfig
from alignflow.generator.training import train

TINY_GENERATOR = {"resolution": 32, "num_layers": 1, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kvasir, make_pairs) -> tuple[Path, Path]:
    """(a dataset of 4 real pairs, a run folder with a generator trained 1 step on it)."""
    root = tmp_path_factory.mktemp("generate")
    make_pairs(kvasir, root / "data", 4)
    train(TrainConfig(source=str(root / "data"), out=str(root / "run"), steps=1, batch_size=2, device="cpu",
                      preview_every=100, generator=dict(TINY_GENERATOR)))
    return root / "data", root / "run"


def generate(capsys, generator: Path, masks: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["generate", "--generator", str(generator), "--masks", str(masks), "--out", str(out), "--steps", "2",
                 "--limit", "2", "--device", "cpu", *extra])
    lines = capsys.readouterr().err.strip().splitlines()
    return code, lines[-1] if lines else ""


def test_generate_never_replaces_its_inputs_or_a_run(trained, capsys):
    data, run = trained
    data_before, run_before = digest(data), digest(run)
    for out in (data, data / "masks", run):
        for extra in ((), ("--overwrite",)):
            code, line = generate(capsys, run, data, out, *extra)
            assert code == 2 and "alignflow generate: error:" in line, (out, extra, line)
    assert digest(data) == data_before and digest(run) == run_before


def test_an_existing_output_is_replaced_only_with_overwrite(trained, tmp_path, capsys):
    data, run = trained
    out = tmp_path / "synthetic"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, line = generate(capsys, run, data, out)
    assert code == 2 and "--overwrite" in line and (out / "mine.txt").exists()
    code, _ = generate(capsys, run, data, out, "--overwrite")
    assert code == 0 and not (out / "mine.txt").exists() and len(list((out / "images").iterdir())) == 2


def test_a_config_file_alone_is_enough_and_its_values_win_over_the_defaults(trained, tmp_path, capsys):
    data, run = trained
    config = tmp_path / "c.yaml"
    config.write_text(f"generator: {run}\nmasks: {data}\nout: {tmp_path / 'out'}\nsteps: 3\nguidance: 7.5\nlimit: 1\n"
                      "device: cpu\n")
    assert main(["generate", "--config", str(config)]) == 0
    row = json.loads((tmp_path / "out" / "manifest.json").read_text())[0]
    assert row["sample_steps"] == 3 and row["guidance_scale"] == 7.5
    # a flag the user types still wins over the file
    assert main(["generate", "--config", str(config), "--out", str(tmp_path / "typed"), "--steps", "2"]) == 0
    assert json.loads((tmp_path / "typed" / "manifest.json").read_text())[0]["sample_steps"] == 2


@pytest.mark.parametrize("bad", [("--steps", "0"), ("--batch-size", "0"), ("--limit", "0"), ("--limit", "-1"),
                                 ("--candidates", "0")])
def test_bad_counts_are_one_line_and_write_nothing(trained, tmp_path, capsys, bad):
    data, run = trained
    code = main(["generate", "--generator", str(run), "--masks", str(data), "--out", str(tmp_path / "o"), *bad])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and bad[0] in lines[0] and not (tmp_path / "o").exists(), lines


def test_unknown_keys_in_a_generate_config_are_refused(trained, tmp_path, capsys):
    data, run = trained
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"generator": str(run), "masks": str(data), "out": str(tmp_path / "o"), "guidence": 3}))
    assert main(["generate", "--config", str(config)]) == 2
    assert "guidence" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_an_unwritable_output_is_one_line(trained, tmp_path, capsys):
    data, run = trained
    (tmp_path / "a_file").write_text("x")
    code, line = generate(capsys, run, data, tmp_path / "a_file", "--overwrite")
    assert code == 2 and "a_file" in line and "existing file" in line
