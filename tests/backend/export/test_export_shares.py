"""Export with labelled target pairs and a synthetic share: copies give each set its share under a uniform draw, copies
are the same pixels (hard links), and nnU-Net's folds never validate on a case whose copy or translation it trains on."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from alignflow.augment.methods import histogram_pairs, photometric_pairs
from alignflow.cli import main
from alignflow.data import read_image, read_mask, scan_dataset
from alignflow.data.shares import equal_share_repeats, export_copies
from alignflow.errors import InputError
from alignflow.export import export_dataset

REAL_PAIRS, TARGET_PAIRS = 6, 2


@pytest.fixture(scope="module")
def sets(tmp_path_factory, kvasir, clinicdb, make_pairs) -> dict[str, Path]:
    """Six real Kvasir-SEG pairs; histogram-matched copies of the first three (towards CVC-ClinicDB frames) and
    photometric copies of all six, made by the engine's own methods; two labelled CVC-ClinicDB pairs as the target."""
    root = tmp_path_factory.mktemp("share_inputs")
    make_pairs(kvasir, root / "real", REAL_PAIRS)
    make_pairs(clinicdb, root / "target", TARGET_PAIRS)
    make_pairs(clinicdb, root / "references", 3, start=10)
    pairs = scan_dataset(root / "real").pairs
    histogram_pairs(pairs[:3], root / "references" / "images", root / "histogram", resolution=64)
    photometric_pairs(pairs, root / "photometric", resolution=64)
    return {name: root / name for name in ("real", "target", "histogram", "photometric")}


def test_export_copies_reach_the_share_with_equal_parts():
    # The benchmark's best pool: 100 real pairs, two generated sets of 100 and 10 labelled references at 0.25.
    assert export_copies(100, {"histogram": 100, "translated": 100, "target": 10}, 0.25) == (9, {"histogram": 1, "translated": 1, "target": 10}, 0.25)
    real_copies, copies, reached = export_copies(81, {"fda": 81, "target": 10}, 0.25)
    assert copies["target"] * 10 == pytest.approx(copies["fda"] * 81, rel=0.15)  # equal parts, up to whole copies
    added = 81 * copies["fda"] + 10 * copies["target"]
    assert reached == pytest.approx(added / (added + 81 * real_copies)) and abs(reached - 0.25) <= 0.01
    assert equal_share_repeats([100, 10, 33]) == [1, 10, 4] and equal_share_repeats([7]) == [1]
    for share, added in ((0.0, {"a": 1}), (1.0, {"a": 1}), (0.25, {}), (0.25, {"a": 0})):
        with pytest.raises(InputError, match="--synthetic-share"):
            export_copies(10, added, share)


def test_share_copies_cases_as_hard_links(tmp_path, sets):
    out = export_dataset(tmp_path / "plain", real=sets["real"], synthetic=[sets["histogram"], sets["photometric"]],
                         target=sets["target"], synthetic_share=0.25, export_format="folders")
    manifest = json.loads((out / "manifest.json").read_text())
    rows = manifest["samples"]
    assert manifest["counts"] == {"real": REAL_PAIRS, "synthetic": 3 + REAL_PAIRS, "target": TARGET_PAIRS, "cases": len(rows)}
    # Every added set the same number of cases (histogram 3 x 2, photometric 6, target 2 x 3), and those make the share.
    per_part = Counter(row["case"].split("_", 1)[0] for row in rows)
    assert per_part["synthetic1"] == per_part["synthetic2"] == per_part["target"] == 6
    added = len(rows) - per_part["real"]
    assert manifest["sampling"]["reached"] == pytest.approx(added / len(rows), abs=1e-4)
    assert abs(added / len(rows) - 0.25) <= 0.01
    assert len(list((out / "images").iterdir())) == len(rows)
    originals = {row["case"]: row for row in rows if row["copy_of"] is None}
    assert len(originals) == REAL_PAIRS + 3 + REAL_PAIRS + TARGET_PAIRS
    for row in rows:
        if row["copy_of"] is None:
            continue
        original = originals[row["copy_of"]]
        assert row["case"].startswith(original["case"] + "_copy") and row["origin"] == original["origin"]
        assert row["source_mask"] == original["source_mask"] and row["input_image"] == original["input_image"]
        for key in ("image", "mask"):
            assert os.path.samefile(out / row[key], out / original[key])  # a hard link, not a second file
    for pair in scan_dataset(sets["target"]).pairs:
        row = originals[f"target_{pair.stem}"]
        assert row["origin"] == "target" and row["seed"] is None and row["source_mask"] == str(pair.mask)
        assert np.array_equal(read_image(out / row["image"]), read_image(pair.image))
        assert np.array_equal(read_mask(out / row["mask"]), read_mask(pair.mask))
    # Without a share every pair is exported once, as before.
    once = export_dataset(tmp_path / "once", real=sets["real"], target=sets["target"], export_format="folders")
    manifest = json.loads((once / "manifest.json").read_text())
    assert manifest["sampling"] is None and manifest["counts"]["cases"] == REAL_PAIRS + TARGET_PAIRS


def test_ome_zarr_copies_are_cases_of_their_own(tmp_path, sets):
    import zarr

    out = export_dataset(tmp_path / "shared.ome.zarr", real=sets["real"], target=sets["target"], synthetic_share=0.25,
                         export_format="ome-zarr")
    rows = json.loads((out / "manifest.json").read_text())["samples"]
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["alignflow"]["cases"] == [row["case"] for row in rows]
    for row in rows:
        if row["copy_of"]:
            copy, original = root[row["case"]], root[row["copy_of"]]
            assert copy.attrs["ome"]["multiscales"][0]["name"] == row["case"]
            assert np.array_equal(copy["0"][:], original["0"][:])
            assert np.array_equal(copy["labels/mask/0"][:], original["labels/mask/0"][:])


def test_nnunet_folds_hold_out_real_pairs_with_their_copies_and_translations(tmp_path, sets):
    out = export_dataset(tmp_path / "Dataset504_Shares", real=sets["real"], synthetic=[sets["histogram"], sets["photometric"]],
                         target=sets["target"], synthetic_share=0.25)
    rows = {row["case"]: row for row in json.loads((out / "manifest.json").read_text())["samples"]}
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 5
    validated = [case for fold in splits for case in fold["val"]]
    # Each real pair is validated once, in one fold, and only real originals are validated.
    assert sorted(validated) == sorted(case for case, row in rows.items() if row["origin"] == "real" and row["copy_of"] is None)
    for fold in splits:
        held_out = {Path(rows[case]["source_mask"]).stem for case in fold["val"]}
        train = set(fold["train"])
        assert train | set(fold["val"]) <= set(rows)
        for case, row in rows.items():
            made_from_held_out = Path(row["source_mask"]).stem in held_out
            # A copy of a validation case, or a histogram / photometric copy of its image, is never trained on.
            assert (case in train) == (not made_from_held_out)
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == len(rows)


def test_bad_share_and_target_inputs_name_the_parameter(tmp_path, sets, capsys):
    with pytest.raises(InputError, match="--synthetic-share"):
        export_dataset(tmp_path / "x", synthetic=[sets["histogram"]], synthetic_share=0.25, export_format="folders")
    with pytest.raises(InputError, match="--synthetic-share"):
        export_dataset(tmp_path / "x", real=sets["real"], synthetic_share=0.25, export_format="folders")
    with pytest.raises(InputError, match="--synthetic-share"):
        export_dataset(tmp_path / "x", real=sets["real"], target=sets["target"], synthetic_share=1.5, export_format="folders")
    with pytest.raises(InputError) as error:
        export_dataset(tmp_path / "x", real=sets["real"], target=tmp_path / "no_such_folder", export_format="folders")
    assert "no_such_folder" in str(error.value)
    assert not (tmp_path / "x").exists()
    assert main(["export", "--real", str(sets["real"]), "--target", str(sets["target"]), "--synthetic-share", "0.25",
                 "--format", "folders", "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert f"{REAL_PAIRS + TARGET_PAIRS} pairs exported" in printed and "share of added pairs" in printed
