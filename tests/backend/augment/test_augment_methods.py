"""``alignflow augment --method``: every method end to end on a few real Kvasir-SEG pairs with CVC-ClinicDB
references, one report comparing them, and bad input named by its flag."""

import json
import shutil
from pathlib import Path

import pytest

from alignflow.cli import main

TINY_GENERATOR = {"resolution": 32, "num_layers": 2, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}


@pytest.fixture(scope="module")
def kvasir_six(tmp_path_factory, kvasir, make_pairs) -> Path:
    root = tmp_path_factory.mktemp("kvasir6")
    make_pairs(kvasir, root, 6)
    return root


@pytest.fixture(scope="module")
def references(tmp_path_factory, clinicdb) -> Path:
    root = tmp_path_factory.mktemp("refs")
    for image in sorted((clinicdb / "images").glob("*.png"))[100:104]:
        shutil.copy(image, root / image.name)
    return root


def augment_args(source: Path, references: Path, out: Path, *extra: str) -> list[str]:
    return ["augment", "--source", str(source), "--references", str(references), "--num-references", "4",
            "--out", str(out), "--resolution", "32", "--num-generated", "4", "--device", "cpu", *extra]


def check_set(entry: dict, method: str, count: int) -> list[dict]:
    assert entry["method"] == method and isinstance(entry["kid"], float) and entry["generated"] == count
    pairs = Path(entry["pairs"])
    assert len(list((pairs / "images").iterdir())) == len(list((pairs / "masks").iterdir())) == count
    rows = json.loads((pairs / "manifest.json").read_text())
    assert len(rows) == count and {row["method"] for row in rows} == {method}
    return rows


@pytest.mark.slow  # ~25 s: the Inception features of KID for three sets, the target and the source images
def test_cheap_methods_train_no_generator_and_the_report_compares_them(tmp_path, kvasir_six, references, capsys):
    out = tmp_path / "job"
    code = main(augment_args(kvasir_six, references, out, "--method", "fda", "histogram", "photometric",
                             "--fda-beta", "0.09", "--export-format", "folders", "--export-share", "0.25"))
    assert code == 0, capsys.readouterr().err
    assert not (out / "stage1").exists() and not (out / "stage2").exists()
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == ["fda", "histogram", "photometric"]
    fda_rows = check_set(report["models"]["fda"], "fda", 4)
    assert all(row["beta"] == 0.09 and Path(row["reference"]).parent == references for row in fda_rows)
    check_set(report["models"]["histogram"], "histogram", 4)
    check_set(report["models"]["photometric"], "photometric", 4)
    assert isinstance(report["source"]["kid"], float)  # the untransformed source images, for comparison
    for entry in [*report["models"].values(), report["source"]]:  # the label-free scores a user can rank by
        assert entry["kid_references"] == entry["kid"] and entry["reward_mmd"] > -1  # no --target: KID is to the references
    assert report["models"]["fda"]["reward_mmd"] != report["models"]["photometric"]["reward_mmd"]
    printed = capsys.readouterr().out
    assert "closest to the target first:" in printed and "source" in printed
    assert "reward MMD" in printed and report["advice"] and report["advice"][-1] in printed
    # the training set: the 6 real pairs plus every method's 4 pairs, the real ones repeated 6 times so that the three
    # sets make a quarter of the cases
    exported = Path(report["export"])
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["counts"] == {"real": 6, "synthetic": 3 * 4, "target": 0, "cases": 6 * 6 + 3 * 4}
    assert manifest["sampling"]["reached"] == 0.25 and len(list((exported / "images").iterdir())) == 6 * 6 + 3 * 4


@pytest.mark.slow
def test_generate_and_translate_share_the_trained_generators(tmp_path, kvasir_six, references, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"generator": TINY_GENERATOR}))
    out = tmp_path / "job"
    code = main(augment_args(kvasir_six, references, out, "--config", str(config), "--stage1-steps", "3",
                             "--stage2-steps", "2", "--batch-size", "2", "--sample-steps", "4", "--method", "generate",
                             "translate", "--strength", "0.5", "--export-format", "folders"))
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == ["stage1", "aligned", "stage1_translated", "aligned_translated"]
    for name in ("stage1", "aligned"):
        check_set(report["models"][name], "generate", 4)
    for name, generator in (("stage1_translated", "stage1"), ("aligned_translated", "stage2")):
        rows = check_set(report["models"][name], "translate", 4)
        assert all(row["strength"] == 0.5 and row["start_step"] == 2 and row["source_image"] for row in rows)
        assert Path(report["models"][name]["generator"]).parent.name == generator
    # exported: the aligned generator's sets, not stage 1's
    assert len(list((Path(report["export"]) / "images").iterdir())) == 6 + 2 * 4


@pytest.mark.parametrize(("extra", "flag"), [
    (["--method", "sharpen"], "--method"),
    (["--method", "translate", "--strength", "1.5"], "--strength"),
    (["--method", "fda", "--fda-beta", "0.9"], "--fda-beta"),
    (["--method", "histogram", "--export-share", "1"], "--export-share"),
])
def test_bad_options_are_one_line_errors_naming_the_flag(tmp_path, kvasir_six, references, extra, flag, capsys):
    code = main(augment_args(kvasir_six, references, tmp_path / "job", *extra))
    err = capsys.readouterr().err
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "job").exists()


def test_missing_references_are_named(tmp_path, kvasir_six, capsys):
    assert main(["augment", "--source", str(kvasir_six), "--out", str(tmp_path / "job"), "--method", "fda"]) == 2
    assert "--references" in capsys.readouterr().err
    code = main(augment_args(kvasir_six, tmp_path / "no_such_folder", tmp_path / "job", "--method", "fda"))
    err = capsys.readouterr().err
    assert code == 2 and "--references" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "job").exists()
