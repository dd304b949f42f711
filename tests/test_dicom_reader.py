"""dicom-reader: DICOM series in (any names, any order, compressed, multi-frame) → volumes
with the right geometry + sidecars; non-images skipped; broken input is one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.triton import phantom_module, read_image
from stage_helpers import (
    PHANTOM_SERIES,
    READER_DIR,
    folders_env,
    one_error_line,
    pydicom_file,
    reader_module,
    run_app,
)

pydicom = pytest.importorskip("pydicom")
reader = reader_module()
mp = phantom_module()


def phantom_files_by_z():
    return sorted(PHANTOM_SERIES.glob("*.dcm"),
                  key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def run_reader(appdir: Path, argv=None, **env):
    """The stage in-process (fast): returns {series uid: (image, sidecar)}."""
    reader.run(argv or [], env=folders_env(appdir, **env))
    out = {}
    for sidecar in (appdir / "output").glob("*.json"):
        data = json.loads(sidecar.read_text())
        out[data["series_instance_uid"]] = (read_image(appdir / "output" / data["volume"]), data)
    return out


def copy_in(appdir: Path, *files: Path, sub: str = "") -> Path:
    target = appdir / "input" / sub
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, target / f.name)
    return target


def test_phantom_series_becomes_the_phantom_volume(tmp_path):
    """File names and InstanceNumber run against the slice order: positions decide."""
    import SimpleITK as sitk

    copy_in(tmp_path, *sorted(PHANTOM_SERIES.glob("*.dcm")), sub="deep/er")
    [(image, side)] = run_reader(tmp_path).values()
    hu, _ = mp.make_phantom()
    assert np.array_equal(sitk.GetArrayFromImage(image), hu)
    assert image.GetPixelIDTypeAsString() == "16-bit signed integer"  # RescaleIntercept -1024 applied
    assert image.GetSize() == mp.SIZE_XYZ
    assert image.GetSpacing() == pytest.approx(mp.SPACING_XYZ)
    assert image.GetOrigin() == pytest.approx(mp.origin_xyz())
    assert side["modality"] == "CT" and side["kind"] == "clara-wf/dicom-series"
    # Slice k of the volume is the instance at z = origin + k * spacing.
    z = []
    for entry in side["instances"]:
        ds = pydicom.dcmread(tmp_path / "input" / entry["file"], stop_before_pixels=True)
        assert ds.SOPInstanceUID == entry["sop_instance_uid"]
        z.append(float(ds.ImagePositionPatient[2]))
    assert z == sorted(z) and len(z) == 64


def test_nifti_by_option(tmp_path):
    copy_in(tmp_path, pydicom_file("CT_small.dcm"))
    [(image, side)] = run_reader(tmp_path, DICOM_READER_FORMAT="nii.gz").values()
    assert side["volume"].endswith(".nii.gz") and image.GetSize() == (128, 128, 1)


@pytest.mark.parametrize("name", [
    "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
])
def test_compressed_and_other_syntaxes_decode_to_the_same_volume(tmp_path, name):
    import SimpleITK as sitk

    copy_in(tmp_path / "ref", pydicom_file("MR_small.dcm"))
    copy_in(tmp_path / "x", pydicom_file(name))
    [(ref, _)] = run_reader(tmp_path / "ref").values()
    [(got, _)] = run_reader(tmp_path / "x").values()
    assert np.array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref))
    assert got.GetOrigin() == pytest.approx(ref.GetOrigin())


def test_deflate_without_geometry_warns_and_reads(tmp_path, capsys):
    copy_in(tmp_path, pydicom_file("image_dfl.dcm"))
    [(image, side)] = run_reader(tmp_path).values()
    assert image.GetSize()[:2] == (512, 512) and side["warnings"]
    assert "geometry is nominal" in capsys.readouterr().out


def test_enhanced_multiframe_ct_gives_the_same_volume(tmp_path):
    """The phantom's slices as one Legacy Converted Enhanced CT object (highdicom)."""
    import SimpleITK as sitk
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom.uid import generate_uid

    files = phantom_files_by_z()[20:32]
    slices = [pydicom.dcmread(p) for p in files]
    enhanced = LegacyConvertedEnhancedCTImage(slices, generate_uid(), 9, generate_uid(), 1)
    (tmp_path / "input").mkdir()
    enhanced.save_as(tmp_path / "input" / "enhanced.dcm")
    copy_in(tmp_path / "single", *files)
    [(multi, side)] = run_reader(tmp_path).values()
    [(single, _)] = run_reader(tmp_path / "single").values()
    assert np.array_equal(sitk.GetArrayFromImage(multi), sitk.GetArrayFromImage(single))
    assert multi.GetOrigin() == pytest.approx(single.GetOrigin())
    assert multi.GetSpacing() == pytest.approx(single.GetSpacing())
    assert [i["frame"] for i in side["instances"]] != [None] * 12


def test_rt_dose_multiframe_uses_grid_offsets_and_scaling(tmp_path):
    import SimpleITK as sitk

    copy_in(tmp_path, pydicom_file("rtdose.dcm"))
    [(image, side)] = run_reader(tmp_path).values()
    ds = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    assert image.GetSize() == (10, 10, 15) and image.GetSpacing() == pytest.approx((10, 10, 5))
    assert sitk.GetArrayFromImage(image) == pytest.approx(ds.pixel_array * float(ds.DoseGridScaling))
    assert len(side["instances"]) == 15


def test_non_images_are_skipped_with_a_note(tmp_path, capsys):
    copy_in(tmp_path, pydicom_file("CT_small.dcm"), pydicom_file("rtstruct.dcm"), pydicom_file("rtplan.dcm"),
            pydicom_file("test-SR.dcm"), pydicom_file("liver_1frame.dcm"))
    (tmp_path / "input" / "README.txt").write_text("not dicom\n")
    series = run_reader(tmp_path)
    assert len(series) == 1
    out = capsys.readouterr().out
    for fragment in ("rtstruct.dcm: RT Structure Set Storage is not an image", "rtplan.dcm:",
                     "test-SR.dcm: Comprehensive SR Storage is not an image", "liver_1frame.dcm: Segmentation",
                     "README.txt: not a DICOM file"):
        assert fragment in out


# --- failures: one line, exit 2, nothing written --------------------------------------------


def _series_copy(tmp_path: Path, drop=()) -> Path:
    files = phantom_files_by_z()
    return copy_in(tmp_path, *[f for i, f in enumerate(files[:10]) if i not in drop])


def test_missing_slice_fails_naming_the_series(tmp_path):
    _series_copy(tmp_path, drop=(4,))
    line = one_error_line(run_app(READER_DIR, folders_env(tmp_path)), "dicom-reader")
    assert "uneven slice spacing, 5.000 mm" in line and "a slice is missing" in line
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").iterdir())


def test_truncated_file_fails_naming_it(tmp_path):
    copy_in(tmp_path, pydicom_file("MR_truncated.dcm"))
    line = one_error_line(run_app(READER_DIR, folders_env(tmp_path)), "dicom-reader")
    assert "MR_truncated.dcm" in line


def test_mixed_sizes_fail_naming_both_files(tmp_path):
    folder = _series_copy(tmp_path)
    victim = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(victim)
    corner = ds.pixel_array[:64, :64].astype("<u2")
    ds.Rows, ds.Columns = 64, 64
    ds.PixelData = corner.tobytes()
    ds.save_as(victim)
    line = one_error_line(run_app(READER_DIR, folders_env(tmp_path)), "dicom-reader")
    assert "slices of different sizes" in line and victim.name in line


def test_same_position_twice_fails(tmp_path):
    folder = _series_copy(tmp_path)
    src = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "duplicate.dcm")
    line = one_error_line(run_app(READER_DIR, folders_env(tmp_path)), "dicom-reader")
    assert "same position" in line


def test_empty_input_and_missing_folder(tmp_path):
    (tmp_path / "input").mkdir()
    assert "no DICOM image series" in one_error_line(run_app(READER_DIR, folders_env(tmp_path)), "dicom-reader")
    line = one_error_line(run_app(READER_DIR, folders_env(tmp_path / "nowhere")), "dicom-reader")
    assert "does not exist" in line
