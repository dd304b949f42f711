"""dicom-writer: a label map + the reader's sidecar → a DICOM Segmentation (highdicom) that
reads back to the same mask, references the source instances, carries SNOMED CT codes and
the algorithm, and passes dciodvfy (Debian dicom3tools) without errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers.triton import model_module, phantom_module
from stage_helpers import PHANTOM_SERIES, WRITER_DIR, folders_env, one_error_line, reader_module, run_app, writer_module

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")
reader = reader_module()
writer = writer_module()
mp = phantom_module()
LABELS = json.loads(
    next(line for line in (Path(__file__).resolve().parents[1] / "test-data" / "models" / "segmentation_ct_v1"
                           / "config.pbtxt").read_text().splitlines() if "string_value" in line)
    .split("string_value: ", 1)[1].strip().strip("'"))


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """A job payload as the `ct`/`organ-seg` workflows leave it before the writer runs:
    the DICOM series, the reader's volume + sidecar, the model's label map + label table."""
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("payload")
    shutil.copytree(PHANTOM_SERIES, root / "dicom-reader" / "input" / "ct-phantom")
    reader.run([], env=folders_env(root / "dicom-reader"))
    (volume,) = (root / "dicom-reader" / "output").glob("*.mhd")
    image = sitk.ReadImage(str(volume))
    labels = model_module().segment(sitk.GetArrayFromImage(image))
    seg = sitk.GetImageFromArray(labels)
    seg.CopyInformation(image)
    out = root / "ai-vnet" / "output"
    out.mkdir(parents=True)
    name = volume.name[: -len(".mhd")]
    sitk.WriteImage(seg, str(out / f"{name}.seg.mhd"))
    (out / f"{name}.seg.json").write_text(json.dumps({
        "kind": "clara-wf/labels", "algorithm": {"name": "segmentation_ct_v1", "version": "1"}, "labels": LABELS}))
    return root, labels, name


def run_writer(root: Path, upstream: str = "ai-vnet", **env):
    e = folders_env(root / "dicom-writer", NVIDIA_CLARA_INPUTS=str(root / upstream / "output" / "x.mhd"),
                    NVIDIA_CLARA_PAYLOADS=str(root), **env)
    return run_app(WRITER_DIR, e)


@pytest.fixture(scope="module")
def seg_file(payload):
    root, _, name = payload
    result = run_writer(root)
    assert result.returncode == 0, result.stderr
    assert f"{name}.seg.dcm" in result.stdout and "segments 1=Soft tissue, 2=Lung, 3=Bone" in result.stdout
    return root / "dicom-writer" / "output" / f"{name}.seg.dcm"


def test_seg_reads_back_to_the_same_label_map(payload, seg_file):
    _, labels, _ = payload
    seg = hd.seg.segread(seg_file)
    side = json.loads(next((seg_file.parents[2] / "dicom-reader" / "output").glob("*.json")).read_text())
    uids = [i["sop_instance_uid"] for i in side["instances"]]
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False,
                                             assert_missing_frames_are_empty=True)
    assert np.array_equal(back.astype(np.uint8), labels)


def test_seg_references_the_source_and_says_what_and_who(payload, seg_file):
    seg = pydicom.dcmread(seg_file)
    source = pydicom.dcmread(next(PHANTOM_SERIES.glob("*.dcm")), stop_before_pixels=True)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert len(referenced) == 64
    segments = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert [segments[k].SegmentLabel for k in (1, 2, 3)] == ["Soft tissue", "Lung", "Bone"]
    lung = segments[2]
    assert (lung.SegmentedPropertyTypeCodeSequence[0].CodeValue,
            lung.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator) == ("39607008", "SCT")
    assert lung.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert lung.SegmentAlgorithmType == "AUTOMATIC" and lung.SegmentAlgorithmName == "segmentation_ct_v1"
    assert lung.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "1"


def test_dciodvfy_reports_no_errors(seg_file):
    if not shutil.which("dciodvfy"):
        pytest.skip("dciodvfy is not installed (Debian package dicom3tools)")
    result = subprocess.run(["dciodvfy", str(seg_file)], capture_output=True, text=True, timeout=120)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_no_sidecar_is_one_clear_line(tmp_path):
    import SimpleITK as sitk

    out = tmp_path / "ai-vnet" / "output"
    out.mkdir(parents=True)
    sitk.WriteImage(sitk.Image(8, 8, 4, sitk.sitkUInt8), str(out / "lonely.seg.mhd"))
    line = one_error_line(run_writer(tmp_path), "dicom-writer")
    assert "no dicom-reader sidecar lonely.json" in line and "run dicom-reader earlier" in line


def test_no_label_map_and_wrong_size(tmp_path, payload):
    import SimpleITK as sitk

    (tmp_path / "ai-vnet" / "output").mkdir(parents=True)
    assert "no label map" in one_error_line(run_writer(tmp_path), "dicom-writer")
    root, _, name = payload
    other = tmp_path / "copy"
    shutil.copytree(root / "dicom-reader", other / "dicom-reader")
    (other / "ai-vnet" / "output").mkdir(parents=True)
    sitk.WriteImage(sitk.Image(16, 16, 4, sitk.sitkUInt8) + 1, str(other / "ai-vnet" / "output" / f"{name}.seg.mhd"))
    line = one_error_line(run_writer(other), "dicom-writer")
    assert "is 16x16x4 but series" in line and "128x128x64" in line
