"""The guide's workflows, run as the guide writes them (`clara-wf test <id>`, default job)
on a fresh copy of the project's shipped data - local engine, the real stages, a real
Triton: DICOM in, DICOM Segmentation out, read back with highdicom and scored against the
phantoms' ground truth. docs/reference-pipeline.md maps each id to its stages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import JOB, REPO, assert_one_line_error, run_cli

# The fast runs are `helm`-marked (run again under the other Helm major by `make test`); the
# Triton-backed ones run once, to keep the suite's time modest.
WALKTHROUGH_JOB = "11111111-1111-1111-1111-111111111111"
sys.path.insert(0, str(REPO / "tools"))
import make_phantom as mp  # noqa: E402

THORAX = "2.25.225071297333823043614441041068709878453"  # the phantoms' SeriesInstanceUIDs (stable)
ABDOMEN = "2.25.213351516429536475070181760794286906020"
GUIDE = {  # the guide's pipeline ids -> the stages they run here
    "0fcdcdea-89c6-456f-b20a-bc7379c54ef2": ["dicom-reader", "recon", "ai-vnet", "dicom-writer"],  # ct-ai
    "1db65f99-c9b7-4329-ab9c-d519e0557638": ["dicom-reader", "ai-vnet", "dicom-writer"],  # organ-seg
    "fd3ee8bf-b9f3-4808-bd60-243f870ff9bd": ["dicom-reader", "ai-livertumor", "dicom-writer"],  # liver-seg
    "1995f10e-ee14-4d67-b307-452051637dbb": ["dicom-reader"],  # dicom-reader-only
    "613e3fce-0d96-495a-a760-f43e68deefd8": ["recon"],  # recon-only
    "21dd9b92-f307-4e68-ba31-fe8b1449ceea": ["recon", "ai-vnet"],  # recon-ai
    "50d31ed4-eeac-47e6-b584-c562f22a0091": ["ai-vnet"],  # ai-only
    "eb66f705-13ea-402c-8baa-143fb3fd9cd5": ["dicom-writer"],  # dicom-writer-only
    "8371285c-8ea8-41cd-958e-44e5664c6ec3": ["dicom-reader", "dicom-writer"],  # dicom-reader-writer
}
NOT_MAPPED = {"a78b1e7a-0325-4d42-b90f-207eb576b14f": "ct-partial"}


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    """One real Triton (both models) on a free port for the module: `clara-wf test` would start
    one on 8000, where a concurrent run on a shared machine may already be serving."""
    from helpers.triton import triton_server

    yield from triton_server(tmp_path_factory.mktemp("triton-state"))


@pytest.fixture
def project(tmp_path) -> Path:
    """What a fresh clone has: charts, apps, tools and the committed test data (no outputs)."""
    for name in ("charts", "apps", "tools"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.whl"))
    shutil.copytree(REPO / "test-data", tmp_path / "test-data",
                    ignore=shutil.ignore_patterns("output", "logs", "locks", "run.json", "runs"))
    return tmp_path


def run(project: Path, *args: str, triton=None):
    uri = ["--trtis-uri", triton.uri] if triton is not None else []
    result = run_cli("test", *args, *uri, cwd=project, env={"KUBECONFIG": str(project / "no-kubeconfig")})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def job(project: Path, *parts: str) -> Path:
    return project.joinpath("test-data", JOB, *parts)


def seg_labels(project: Path, series: str, names: dict) -> np.ndarray:
    """The SEG of ``series`` as a label volume in slice order, labels numbered as ``names`` says."""
    import highdicom as hd

    seg = hd.seg.segread(job(project, "dicom-writer", "output", f"{series}.seg.dcm"))
    sidecar = json.loads(job(project, "dicom-reader", "output", f"{series}.json").read_text())
    numbers = seg.get_pixels_by_source_instance([i["sop_instance_uid"] for i in sidecar["instances"]],
                                                combine_segments=True, relabel=False,
                                                assert_missing_frames_are_empty=True)
    out = np.zeros(numbers.shape, dtype=np.uint8)
    for segment in seg.SegmentSequence:
        out[numbers == segment.SegmentNumber] = names[segment.SegmentLabel]
    return out


ORGANS = {"Soft tissue": 1, "Lung": 2, "Bone": 3}


def test_the_guides_ids_map_to_the_documented_stages():
    workflows = yaml.safe_load((REPO / "charts" / "clara-workflow" / "values.yaml").read_text())["workflows"]
    for workflow_id, stages in GUIDE.items():
        assert workflows[workflow_id]["stages"] == stages, workflow_id
    assert workflows["ct"]["stages"] == GUIDE["0fcdcdea-89c6-456f-b20a-bc7379c54ef2"]
    assert workflows["ai"]["stages"] == GUIDE["fd3ee8bf-b9f3-4808-bd60-243f870ff9bd"]
    doc = (REPO / "docs" / "reference-pipeline.md").read_text()
    assert all(workflow_id in doc for workflow_id in [*GUIDE, *NOT_MAPPED])


@pytest.mark.helm
@pytest.mark.parametrize("workflow_id", sorted(NOT_MAPPED))
def test_ids_the_guide_does_not_define_say_so_in_one_line(project, workflow_id):
    result = run_cli("test", workflow_id, cwd=project, env={"KUBECONFIG": str(project / "no-kubeconfig")})
    assert_one_line_error(result, 2, f"the guide's pipeline {NOT_MAPPED[workflow_id]!r} ({workflow_id}) is not defined")


@pytest.mark.helm
def test_walkthrough_dicom_reader_only_on_the_guides_file(project):
    """`clara-wf test dicom-reader-only 11111111-…` on test-data/1111…/…/SOP-uid.dcm."""
    run(project, "dicom-reader-only", WALKTHROUGH_JOB)
    out = project / "test-data" / WALKTHROUGH_JOB / "dicom-reader" / "output"
    (sidecar,) = out.glob("*.json")
    data = json.loads(sidecar.read_text())
    assert data["modality"] == "CT" and data["size"] == [128, 128, 1]
    assert data["instances"][0]["file"] == "patient-id/study-uid/series-uid/SOP-uid.dcm"
    assert (out / data["volume"]).is_file()


@pytest.mark.helm
def test_dicom_writer_only_writes_the_ground_truth_as_a_seg(project):
    import highdicom as hd

    run(project, "eb66f705-13ea-402c-8baa-143fb3fd9cd5")
    seg = hd.seg.segread(job(project, "dicom-writer", "output", f"{THORAX}.seg.dcm"))
    sidecar = json.loads(job(project, "dicom-writer", "input", f"{THORAX}.json").read_text())
    numbers = seg.get_pixels_by_source_instance([i["sop_instance_uid"] for i in sidecar["instances"]],
                                                combine_segments=True, relabel=False,
                                                assert_missing_frames_are_empty=True)
    assert {s.SegmentLabel: s.SegmentNumber for s in seg.SegmentSequence} == ORGANS
    assert np.array_equal(numbers.astype(np.uint8), mp.ground_truth())


def test_dicom_reader_writer_round_trips_the_series(project):
    """8371285c…: DICOM -> volumes -> DICOM again (derived series), read back to the same voxels."""
    import SimpleITK as sitk

    run(project, "8371285c-8ea8-41cd-958e-44e5664c6ec3")
    derived = [p for p in job(project, "dicom-writer", "output").iterdir() if p.is_dir()]
    assert len(derived) == 2  # thorax and abdomen
    again = project / "again"
    (again / "input").mkdir(parents=True)
    for folder in derived:
        shutil.copytree(folder, again / "input" / folder.name)
    reader = subprocess.run([sys.executable, "-u", "main.py"], cwd=project / "apps" / "dicom-reader", text=True,
                            capture_output=True, env={**os.environ, "NVIDIA_CLARA_APPDIR": str(again),
                                                      "NVIDIA_CLARA_INPUTS": "input", "NVIDIA_CLARA_OUTPUTS": "output"})
    assert reader.returncode == 0, reader.stderr
    volumes = {sitk.ReadImage(str(p)).GetSize(): sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
               for p in (again / "output").glob("*.mhd")}
    assert np.array_equal(volumes[(128, 128, 64)], mp.make_phantom()[0])
    assert np.array_equal(volumes[(128, 128, 32)], mp.make_abdomen()[0])


@pytest.mark.helm
def test_recon_only_reconstructs_the_shipped_projections(project):
    run(project, "613e3fce-0d96-495a-a760-f43e68deefd8")
    assert job(project, "recon", "output", "recon.mhd").is_file()


@pytest.mark.slow
def test_ct_dicom_in_seg_out_and_the_demo_overlay(project, triton):
    """`ct` (= ct-ai 0fcdcdea…): reader -> recon -> ai-vnet (Triton) -> writer, both series."""
    run(project, "ct", triton=triton)
    report = mp.dice_report(seg_labels(project, THORAX, ORGANS))
    assert all(v >= 0.9 for v in report.values()), report
    assert job(project, "dicom-writer", "output", f"{ABDOMEN}.seg.dcm").is_file()
    shown = subprocess.run([sys.executable, str(project / "tools" / "seg_overlay.py")], capture_output=True,
                           text=True, cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert f"DICOM SEG: {job(project, 'dicom-writer', 'output', THORAX + '.seg.dcm')}" in shown.stdout
    from PIL import Image

    assert Image.open(job(project, "demo", "output", f"{THORAX}.png")).size == (512, 512)


@pytest.mark.slow
def test_organ_seg_by_its_id(project, triton):
    run(project, "1db65f99-c9b7-4329-ab9c-d519e0557638", triton=triton)
    report = mp.dice_report(seg_labels(project, THORAX, ORGANS))
    assert all(v >= 0.9 for v in report.values()), report


@pytest.mark.slow
def test_liver_seg_by_its_id_finds_liver_and_tumours(project, triton):
    """liver-seg (= ai, fd3ee8bf…): reader -> ai-livertumor (second model, same Triton) -> writer."""
    run(project, "fd3ee8bf-b9f3-4808-bd60-243f870ff9bd", triton=triton)
    labels = seg_labels(project, ABDOMEN, {"Liver": mp.LIVER_LABEL, "Liver tumor": mp.TUMOR_LABEL})
    truth = mp.make_abdomen()[1]
    liver, tumor = mp.dice(labels, truth, mp.LIVER_LABEL), mp.dice(labels, truth, mp.TUMOR_LABEL)
    assert liver >= 0.9 and tumor >= 0.75, (liver, tumor)
    # The thorax has no liver: no SEG for it (and a note in the log), not an empty one.
    assert not job(project, "dicom-writer", "output", f"{THORAX}.seg.dcm").exists()


@pytest.mark.slow
def test_recon_ai_segments_the_reconstruction(project, triton):
    import SimpleITK as sitk

    run(project, "21dd9b92-f307-4e68-ba31-fe8b1449ceea", triton=triton)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(job(project, "ai-vnet", "output", "recon.seg.mhd"))))
    report = mp.dice_report(labels, mp.ground_truth()[mp.SINO_SLICES])
    assert all(v >= 0.9 for v in report.values()), report
