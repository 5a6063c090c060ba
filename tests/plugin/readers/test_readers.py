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
    assert reader is not None and dataset_folder.get_reader(str(clinicdb_small / "images")) is None
    (images, image_meta, image_kind), (masks, mask_meta, mask_kind) = reader(str(clinicdb_small))
    assert (image_kind, mask_kind) == ("image", "labels") and image_meta["rgb"]
    first = sorted((clinicdb_small / "images").iterdir())[0]
    assert images.shape[0] == masks.shape[0] == 6
    np.testing.assert_array_equal(np.asarray(images[0]), read_image(first))
    np.testing.assert_array_equal(np.asarray(masks[0]), read_mask(clinicdb_small / "masks" / first.name))


def test_dataset_folder_with_unmatched_files_names_them(tmp_path, clinicdb_small):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    image = sorted((clinicdb_small / "images").iterdir())[0]
    (tmp_path / "images" / image.name).write_bytes(image.read_bytes())
    with pytest.raises(InputError, match=image.name):
        dataset_folder.read_dataset_folder(str(tmp_path))


def _ct_slice(path: Path, instance: int, pixels: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.InstanceNumber = "CT", instance
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
