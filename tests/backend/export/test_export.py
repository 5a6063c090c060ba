"""Export of real and generated pairs: every format round-trips pixels and labels, metadata follows each format's
documentation, the manifest makes synthetic images regenerable, and failures leave earlier exports intact."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from alignflow.cli import main
from alignflow.data import read_image, read_mask, scan_dataset
from alignflow.errors import InputError
from alignflow.export import export_dataset
from alignflow.generator.pairs import write_synthetic_pairs

REAL_PAIRS = 4
SYNTHETIC_PAIRS = 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, kvasir, clinicdb, make_pairs) -> dict[str, Path]:
    """Real Kvasir-SEG pairs, and generated pairs written by augment's own writer from three Kvasir-SEG masks.

    The "generated" pixels are real CVC-ClinicDB frames (a trained generator is not needed to test the export); the
    generator folder holds a real safetensors file, whose sha256 the manifest must report.
    """
    root = tmp_path_factory.mktemp("export_inputs")
    make_pairs(kvasir, root / "real", REAL_PAIRS)
    generator = root / "run" / "generator"
    generator.mkdir(parents=True)
    save_file({"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, str(generator / "model.safetensors"))
    (generator / "generator.json").write_text(json.dumps({"resolution": 64}))
    masks = sorted((kvasir / "masks").iterdir())[REAL_PAIRS : REAL_PAIRS + SYNTHETIC_PAIRS]
    frames = sorted((clinicdb / "images").iterdir())[:SYNTHETIC_PAIRS]
    images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((64, 64)))).permute(2, 0, 1)
                          for f in frames]).float() / 255
    provenance = {"generator": str(root / "run"), "references": [str(frames[0])], "guidance_scale": 2.0, "sample_steps": 28}
    write_synthetic_pairs(root / "synthetic", [m.stem for m in masks], images, masks, [7, 8, 9], provenance)
    return {"real": root / "real", "synthetic": root / "synthetic", "weights": generator / "model.safetensors"}


def _sources(inputs: dict[str, Path]) -> dict[str, tuple[Path, Path]]:
    """case name -> (source image, source mask), as the export names them."""
    cases = {}
    for prefix, folder in (("real", inputs["real"]), ("synthetic", inputs["synthetic"])):
        for pair in scan_dataset(folder).pairs:
            cases[f"{prefix}_{pair.stem}"] = (pair.image, pair.mask)
    return cases


def _raw_ids(path: Path) -> np.ndarray:
    """Label file values exactly as stored (no 0/255 interpretation), as nnU-Net reads them."""
    return np.asarray(Image.open(path))


def test_nnunet_round_trip_dataset_json_and_monai_datalist(tmp_path, inputs):
    from monai.data import load_decathlon_datalist

    out = export_dataset(tmp_path / "Dataset501_Polyps", real=inputs["real"], synthetic=[inputs["synthetic"]],
                         label_names=["background", "polyp"])
    total = REAL_PAIRS + SYNTHETIC_PAIRS
    spec = json.loads((out / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert spec["labels"] == {"background": 0, "polyp": 1}
    assert spec["numTraining"] == total and spec["file_ending"] == ".png"
    # The documented layout, checked as nnU-Net's integrity check does: {case}_0000 image per label, same geometry,
    # label values among the declared consecutive ids.
    labels = sorted((out / "labelsTr").iterdir())
    assert len(labels) == total and len(list((out / "imagesTr").iterdir())) == total
    for case, (image_path, mask_path) in _sources(inputs).items():
        image_file, label_file = out / "imagesTr" / f"{case}_0000.png", out / "labelsTr" / f"{case}.png"
        assert np.array_equal(read_image(image_file), read_image(image_path))
        ids = _raw_ids(label_file)
        assert ids.ndim == 2 and ids.shape == read_image(image_file).shape[:2]
        assert set(np.unique(ids)) <= {0, 1} and np.array_equal(ids, read_mask(mask_path))
    datalist = load_decathlon_datalist(str(out / "datalist.json"), is_segmentation=True, data_list_key="training")
    assert len(datalist) == total
    for item in datalist:
        assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
        assert Path(item["image"]).name == Path(item["label"]).name.replace(".png", "_0000.png")


def test_folders_round_trip_multiclass_is_a_dataset_the_engine_reads(tmp_path, shared_data, make_pairs):
    make_pairs(shared_data / "Drishti-GS_roi", tmp_path / "drishti", 3)
    out = export_dataset(tmp_path / "exported", real=tmp_path / "drishti", export_format="folders")
    exported = scan_dataset(out)
    assert exported.class_values == (0, 1, 2)
    for pair in scan_dataset(tmp_path / "drishti").pairs:
        assert np.array_equal(read_image(out / "images" / f"real_{pair.stem}.png"), read_image(pair.image))
        assert np.array_equal(read_mask(out / "masks" / f"real_{pair.stem}.png"), read_mask(pair.mask))
    assert json.loads((out / "labels.json").read_text())["class_2"] == {"id": 2, "mask_value": 2}


def test_ome_zarr_round_trip_and_ngff_metadata(tmp_path, inputs):
    import zarr

    out = export_dataset(tmp_path / "polyps.ome.zarr", real=inputs["real"], synthetic=[inputs["synthetic"]],
                         export_format="ome-zarr", label_names=["background", "polyp"])
    root = zarr.open_group(str(out), mode="r")
    cases = _sources(inputs)
    assert root.attrs["alignflow"]["cases"] == list(cases)
    for case, (image_path, mask_path) in cases.items():
        image = root[case]
        ome = image.attrs["ome"]
        assert ome["version"] == "0.5"
        multiscale = ome["multiscales"][0]
        assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
        assert multiscale["datasets"][0]["path"] == "0"
        assert multiscale["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
        assert image["0"].metadata.dimension_names == ("c", "y", "x")
        assert np.array_equal(np.moveaxis(image["0"][:], 0, -1), read_image(image_path))
        assert image["labels"].attrs["ome"]["labels"] == ["mask"]
        label = image["labels/mask"]
        label_meta = label.attrs["ome"]
        assert [a["name"] for a in label_meta["multiscales"][0]["axes"]] == ["y", "x"]
        assert len(label_meta["multiscales"][0]["datasets"]) == len(multiscale["datasets"])
        assert {c["label-value"] for c in label_meta["image-label"]["colors"]} == {0, 1}
        assert label_meta["image-label"]["source"] == {"image": "../../"}
        assert label["0"].dtype == np.uint8 and np.array_equal(label["0"][:], read_mask(mask_path))
    assert (out / "manifest.json").is_file()


def test_class_ids_become_consecutive(tmp_path, shared_data, make_pairs):
    """Masks with ids {0, 2} (the Drishti-GS cup only) become {0, 1}, and the manifest says which was which."""
    make_pairs(shared_data / "Drishti-GS_roi", tmp_path / "cup", 2)
    for path in (tmp_path / "cup" / "masks").iterdir():
        mask = read_mask(path)
        Image.fromarray(np.where(mask == 1, 0, mask).astype(np.uint8)).save(path)
    out = export_dataset(tmp_path / "Dataset502_Cup", real=tmp_path / "cup", label_names=["background", "cup"])
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "cup": 1}
    for path in (out / "labelsTr").iterdir():
        assert set(np.unique(_raw_ids(path))) == {0, 1}
    rows = json.loads((out / "manifest.json").read_text())["samples"]
    assert rows[0]["post_processing"]["labels"] == {"mask_ids_to_consecutive": {"0": 0, "2": 1}}


def test_manifest_has_a_complete_row_per_sample(tmp_path, inputs):
    out = export_dataset(tmp_path / "plain", real=inputs["real"], synthetic=inputs["synthetic"], export_format="folders")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"real": REAL_PAIRS, "synthetic": SYNTHETIC_PAIRS, "target": 0, "cases": REAL_PAIRS + SYNTHETIC_PAIRS}
    assert manifest["sampling"] is None
    assert manifest["software"]["torch"] == torch.__version__ and manifest["software"]["alignflow"]
    rows = {row["case"]: row for row in manifest["samples"]}
    assert set(rows) == set(_sources(inputs))
    weights_sha = hashlib.sha256(inputs["weights"].read_bytes()).hexdigest()
    generated_rows = json.loads((inputs["synthetic"] / "manifest.json").read_text())
    for source in generated_rows:
        row = rows[f"synthetic_{source['stem']}"]
        assert row["origin"] == "synthetic" and row["seed"] == source["seed"] and row["source_mask"] == source["source_mask"]
        assert row["checkpoint_sha256"] == weights_sha
        assert row["references"] == source["references"] and row["guidance_scale"] == 2.0 and row["sample_steps"] == 28
        assert row["post_processing"]["resize"] == {"from": 64, "to": "the source mask's size", "method": "bicubic"}
        assert (out / row["image"]).is_file() and (out / row["mask"]).is_file()
    for row in rows.values():
        assert row["copy_of"] is None
        assert set(row) >= {"case", "origin", "image", "mask", "seed", "source_mask", "checkpoint_sha256",
                            "references", "post_processing", "generator"}
        if row["origin"] == "real":
            assert row["seed"] is None and row["checkpoint_sha256"] is None and Path(row["source_mask"]).is_file()


def test_refuses_to_overwrite_unless_asked(tmp_path, inputs):
    out = export_dataset(tmp_path / "plain", real=inputs["real"], export_format="folders")
    (out / "marker.txt").write_text("old export")
    with pytest.raises(InputError, match="overwrite") as error:
        export_dataset(out, synthetic=[inputs["synthetic"]], export_format="folders")
    assert str(out) in str(error.value) and (out / "marker.txt").is_file()
    export_dataset(out, synthetic=[inputs["synthetic"]], export_format="folders", overwrite=True)
    assert not (out / "marker.txt").exists()
    assert len(list((out / "images").iterdir())) == SYNTHETIC_PAIRS


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_killed_export_leaves_the_old_dataset_intact(tmp_path, inputs, kvasir):
    out = export_dataset(tmp_path / "plain", real=inputs["real"], export_format="folders")
    before = _tree_digest(out)
    command = [sys.executable, "-m", "alignflow.cli", "export", "--real", str(kvasir), "--out", str(out),
               "--format", "folders", "--overwrite"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            partial = [p for p in tmp_path.glob(".plain.*.tmp") if len(list((p / "images").glob("*.png"))) >= 20]
            if partial:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the export finished before it could be killed"
        assert partial, "no partial export appeared"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert _tree_digest(out) == before  # the old export, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["plain"]


def test_bad_inputs_name_the_file_or_parameter(tmp_path, inputs):
    with pytest.raises(InputError, match="DatasetXXX_Name"):
        export_dataset(tmp_path / "polyps", real=inputs["real"])
    with pytest.raises(InputError, match="format"):
        export_dataset(tmp_path / "x", real=inputs["real"], export_format="nifti")
    with pytest.raises(InputError, match="--target"):
        export_dataset(tmp_path / "x", export_format="folders")
    with pytest.raises(InputError, match="2 class names"):
        export_dataset(tmp_path / "x", real=inputs["real"], export_format="folders", label_names=["a", "b", "c"])
    with pytest.raises(InputError, match="overlaps"):
        export_dataset(inputs["real"] / "inside", real=inputs["real"], export_format="folders")
    # A generated-pairs folder without its manifest cannot be exported: its images could never be regenerated.
    with pytest.raises(InputError, match="manifest.json") as error:
        export_dataset(tmp_path / "x", synthetic=[inputs["real"]], export_format="folders")
    assert str(inputs["real"] / "manifest.json") in str(error.value)
    assert not (tmp_path / "x").exists()


def test_synthetic_manifest_without_a_row_for_a_pair(tmp_path, inputs):
    import shutil

    broken = tmp_path / "generated"
    shutil.copytree(inputs["synthetic"], broken)
    rows = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(rows[1:]))
    with pytest.raises(InputError, match=rows[0]["stem"]):
        export_dataset(tmp_path / "x", synthetic=[broken], export_format="folders")


def test_cli_exports_and_reports_bad_input_in_one_line(tmp_path, inputs, capsys):
    assert main(["export", "--real", str(inputs["real"]), "--out", str(tmp_path / "Dataset503_Cli")]) == 0
    assert f"{REAL_PAIRS} pairs exported" in capsys.readouterr().out
    assert main(["export", "--real", str(inputs["real"]), "--out", str(tmp_path / "Dataset503_Cli")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("alignflow export: error:") and "Dataset503_Cli" in err and "overwrite" in err
