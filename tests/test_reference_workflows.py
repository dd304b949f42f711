"""The guide's workflows, run as the guide writes them (`clara-wf test <id>`, default job)
on a fresh copy of the project's shipped data, local engine, real stages, real Triton:
DICOM in, DICOM Segmentation out, checked by highdicom and against the phantom's truth."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import JOB, REPO, run_cli

pytestmark = pytest.mark.helm
WALKTHROUGH_JOB = "11111111-1111-1111-1111-111111111111"
sys.path.insert(0, str(REPO / "tools"))


def fresh_project(root: Path) -> Path:
    """What a fresh clone has: charts, apps, tools, the committed test data (no outputs)."""
    for name in ("charts", "apps", "tools"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.whl"))
    shutil.copytree(REPO / "test-data", root / "test-data",
                    ignore=shutil.ignore_patterns("output", "logs", "locks", "run.json", "runs"))
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return fresh_project(tmp_path_factory.mktemp("guide"))


def run(project: Path, *args: str):
    result = run_cli("test", *args, cwd=project, env={"KUBECONFIG": str(project / "no-kubeconfig")})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def segs(project: Path, job: str = JOB, stage: str = "dicom-writer"):
    return sorted((project / "test-data" / job / stage / "output").glob("*.seg.dcm"))


def read_back(seg_path: Path, sidecar: dict) -> np.ndarray:
    """The SEG as a label volume in the source series' slice order (highdicom)."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    uids = [i["sop_instance_uid"] for i in sidecar["instances"]]
    numbers = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False,
                                                assert_missing_frames_are_empty=True)
    # Segment number -> the label it stands for (by name, as the label table gives them).
    by_label = {s.SegmentLabel: s.SegmentNumber for s in seg.SegmentSequence}
    return numbers.astype(np.uint8), by_label


def test_walkthrough_dicom_reader_only_on_the_guides_file(project):
    """`clara-wf test dicom-reader-only 11111111-…` on test-data/1111…/…/SOP-uid.dcm."""
    result = run(project, "dicom-reader-only", WALKTHROUGH_JOB)
    assert "workflow 'dicom-reader-only' succeeded" in result.stdout
    out = project / "test-data" / WALKTHROUGH_JOB / "dicom-reader" / "output"
    (sidecar,) = out.glob("*.json")
    data = json.loads(sidecar.read_text())
    assert data["modality"] == "CT" and data["size"] == [128, 128, 1]
    assert data["instances"][0]["file"] == "patient-id/study-uid/series-uid/SOP-uid.dcm"
    assert (out / data["volume"]).is_file()


def test_dicom_writer_only_by_its_id_writes_the_ground_truth_as_a_seg(project):
    from make_phantom import ground_truth

    run(project, "eb66f705-13ea-402c-8baa-143fb3fd9cd5")
    (seg,) = segs(project)
    (sidecar,) = (project / "test-data" / JOB / "dicom-writer" / "input").glob("2.25.*[0-9].json")
    labels, by_label = read_back(seg, json.loads(sidecar.read_text()))
    truth = ground_truth()
    assert by_label == {"Soft tissue": 1, "Lung": 2, "Bone": 3}
    assert np.array_equal(labels, truth)


@pytest.mark.slow
def test_organ_seg_by_its_id_dicom_in_seg_out(project):
    """1db65f99…: dicom-reader -> ai-vnet (Triton) -> dicom-writer; Dice >= 0.9 per organ."""
    from make_phantom import dice_report

    run(project, "1db65f99-c9b7-4329-ab9c-d519e0557638")
    (seg,) = segs(project)
    (sidecar,) = (project / "test-data" / JOB / "dicom-reader" / "output").glob("*.json")
    labels, by_label = read_back(seg, json.loads(sidecar.read_text()))
    model_labels = np.zeros_like(labels)
    for name, value in (("Soft tissue", 1), ("Lung", 2), ("Bone", 3)):
        model_labels[labels == by_label[name]] = value
    report = dice_report(model_labels)
    assert all(v >= 0.9 for v in report.values()), report
