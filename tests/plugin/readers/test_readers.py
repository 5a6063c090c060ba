"""Readers on real files: a dataset folder opens images with their masks; DICOM and NIfTI files written by the libraries."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from alignflow.data import read_image, read_mask
from alignflow.errors import InputError
from napari_alignflow.readers import dataset_folder, dicom, nifti


def test_dataset_folder_opens_images_and_masks_as_matching_stacks(clinicdb_small):
    reader = dataset_folder.get_reader(str(clinicdb_small))
    assert reader is not None and dataset_folder.get_reader(str(clinicdb_small / "images" / "x.png")) is None
    (images, image_meta, image_kind), (masks, mask_meta, mask_kind) = reader(str(clinicdb_small))
    assert (image_kind, mask_kind) == ("image", "labels") and image_meta["rgb"]
    first = sorted((clinicdb_small / "images").iterdir())[0]
    assert images.shape[0] == masks.shape[0] == 6
    np.testing.assert_array_equal(np.asarray(images[0]), read_image(first))
    np.testing.assert_array_equal(np.asarray(masks[0]), read_mask(clinicdb_small / "masks" / first.name))


def test_a_folder_of_scans_opens_as_one_stack_named_by_file(tmp_path, clinicdb_small, kvasir_small):
    files = [sorted((clinicdb_small / "images").iterdir())[0], sorted((kvasir_small / "images").iterdir())[0]]
    for file in files:  # two sizes: padded to the largest, each slice keeps its name and size
        (tmp_path / file.name).write_bytes(file.read_bytes())
    [(stack, meta, kind)] = dataset_folder.get_reader(str(tmp_path))(str(tmp_path))
    assert kind == "image" and meta["name"] == tmp_path.name and stack.shape[0] == 2
    assert meta["metadata"]["names"] == sorted(f.name for f in files)
    first = read_image(tmp_path / meta["metadata"]["names"][0])
    np.testing.assert_array_equal(np.asarray(stack[0])[: first.shape[0], : first.shape[1]], first)


def test_images_without_masks_open_with_a_plain_notification(tmp_path, clinicdb_small):
    from ..conftest import notifications_since

    (tmp_path / "images").mkdir()
    for file in sorted((clinicdb_small / "images").iterdir())[:3]:
        (tmp_path / "images" / file.name).write_bytes(file.read_bytes())
    seen = len(notifications_since(0))
    [(stack, meta, kind)] = dataset_folder.get_reader(str(tmp_path))(str(tmp_path))
    assert kind == "image" and stack.shape[0] == 3
    assert any(f"masks/ missing in {tmp_path}" in m for m in notifications_since(seen))
    (tmp_path / "images").rename(tmp_path / "masks")  # masks alone: nothing to open, said so
    assert dataset_folder.get_reader(str(tmp_path))(str(tmp_path)) == [(None,)]
    assert any(f"images/ missing in {tmp_path}" in m for m in notifications_since(seen))


def test_a_dropped_dataset_folder_opens_without_a_reader_dialog(make_napari_viewer, clinicdb_small):
    """A drop opens with plugin=None; with napari's reader and AlignFlow both able to read a folder that raises
    MultipleReaderError, which the GUI turns into the "choose reader" dialog. The dock makes AlignFlow the remembered
    reader for folders, so the drop opens at once."""
    from napari.errors import MultipleReaderError

    from napari_alignflow.readers.preferences import prefer_alignflow_readers

    viewer = make_napari_viewer()
    with pytest.raises(MultipleReaderError):
        viewer.open(str(clinicdb_small), plugin=None)
    assert "*/" in prefer_alignflow_readers()
    layers = viewer.open(str(clinicdb_small), plugin=None)
    assert [layer.name for layer in layers] == [f"{clinicdb_small.name} images", f"{clinicdb_small.name} masks"]


def test_dataset_folder_with_unmatched_files_names_them(tmp_path, clinicdb_small):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    image = sorted((clinicdb_small / "images").iterdir())[0]
    (tmp_path / "images" / image.name).write_bytes(image.read_bytes())
    with pytest.raises(InputError, match=image.name):
        dataset_folder.read_dataset_folder(str(tmp_path))


def _ct_slice(path: Path, instance: int, pixels: np.ndarray, series: str | None = None) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.InstanceNumber = "CT", instance
    if series is not None:
        ds.SeriesInstanceUID, ds.SeriesDescription = series, "CT abdomen"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_series_stacks_in_instance_order_in_hounsfield_units(tmp_path, clinicdb_small):
    grey = read_image(sorted((clinicdb_small / "images").iterdir())[0])[..., 0].astype(np.uint16) * 8
    files = [tmp_path / "b.dcm", tmp_path / "a.dcm"]
    _ct_slice(files[0], 2, grey + 1)
    _ct_slice(files[1], 1, grey)
    reader = dicom.get_reader([str(f) for f in files])
    [(stack, meta, kind)] = reader([str(f) for f in files])
    assert kind == "image" and stack.shape == (2, *grey.shape)
    np.testing.assert_array_equal(stack[0], grey.astype(np.float32) - 1024)  # instance 1 first, intercept applied
    assert dicom.get_reader(str(tmp_path / "x.png")) is None


def test_a_dropped_series_opens_as_one_stack_with_its_file_names(tmp_path, clinicdb_small):
    """napari reads a plain (non-shift) drop of three files one by one: the first brings the whole series, the others
    add nothing; a folder of the series opens the same stack."""
    grey = read_image(sorted((clinicdb_small / "images").iterdir())[0])[..., 0].astype(np.uint16)
    series = generate_uid()
    files = [tmp_path / f"slice{i}.dcm" for i in (3, 1, 2)]
    for instance, file in zip((3, 1, 2), files):
        _ct_slice(file, instance, grey + instance, series)
    _ct_slice(tmp_path / "other.dcm", 1, grey, generate_uid())  # another series in the same folder stays out
    opened = [dicom.read_dicom(str(file)) for file in files]
    [(stack, meta, kind)] = opened[0]
    assert opened[1] == opened[2] == [(None,)]
    assert stack.shape == (3, *grey.shape) and meta["name"] == "CT abdomen (3 slices)"
    assert meta["metadata"]["names"] == ["slice1.dcm", "slice2.dcm", "slice3.dcm"]
    np.testing.assert_array_equal(stack[0], grey.astype(np.float32) + 1 - 1024)
    from_folder = dataset_folder.get_reader(str(tmp_path))(str(tmp_path))
    assert sorted(layer[0].shape[0] if layer[0].ndim == 3 else 1 for layer in from_folder) == [1, 3]


def test_a_file_that_is_not_dicom_is_an_input_error(tmp_path, clinicdb_small):
    fake = tmp_path / "scan.dcm"
    fake.write_bytes(sorted((clinicdb_small / "images").iterdir())[0].read_bytes())
    with pytest.raises(InputError, match="scan.dcm"):
        dicom.read_dicom(str(fake))


def test_nifti_volume_opens_with_slices_first_and_spacing_as_scale(tmp_path, clinicdb_small):
    grey = read_image(sorted((clinicdb_small / "images").iterdir())[0])[..., 0].astype(np.float32)
    volume_xyz = np.stack([grey.T, grey.T * 0.5, grey.T * 0.25], axis=-1)  # (x, y, z), three slices
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(volume_xyz, affine), tmp_path / "scan.nii.gz")
    [(volume, meta, kind)] = nifti.get_reader(str(tmp_path / "scan.nii.gz"))(str(tmp_path / "scan.nii.gz"))
    assert volume.shape == (3, *grey.shape) and meta["scale"] == pytest.approx((2.5, 0.8, 0.8)) and meta["name"] == "scan"
    np.testing.assert_allclose(volume[1], grey * 0.5)
