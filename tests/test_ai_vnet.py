"""The ai-vnet reference stage: the real main.py as a separate process, against a real
local Triton serving test-data/models (slow), and its folder/error handling (fast)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.triton import (
    APP_DIR,
    MODEL_NAME,
    PHANTOM_INPUT,
    REPO,
    app_module,
    free_port,
    geometry,
    phantom_module,
    read_image,
    run_stage,
    stage_env,
    triton_server,
    write_volume,
)

app = app_module()


def assert_one_error_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ai-vnet: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- fast: folders


@pytest.mark.parametrize(
    "spec, path",
    [
        ("payload:/input", "/input"),
        ("payload:/input;up-op/out:/input1", "/input"),
        (" ; my-op/out:/output1 ;my-op/b:/output2", "/output1"),
        ("a:/x:y", "/x:y"),
        ("", None),
    ],
)
def test_first_path(spec, path):
    assert app.first_path(spec) == path


def test_a_list_entry_without_a_name_is_an_input_problem():
    with pytest.raises(app.InputProblem, match="has no ':'"):
        app.first_path("/plain/path")


def test_folders_from_the_chart_variables(tmp_path):
    env = {"NVIDIA_CLARA_APPDIR": str(tmp_path), "NVIDIA_CLARA_INPUTS": "input/input.mhd",
           "NVIDIA_CLARA_OUTPUTS": "output/output.mhd"}
    assert app.folders(env) == (tmp_path / "input", tmp_path / "output")


def test_folders_defaults_and_folder_valued_inputs(tmp_path):
    assert app.folders({}) == (Path("/app/input"), Path("/app/output"))
    (tmp_path / "in" / "series").mkdir(parents=True)
    env = {"NVIDIA_CLARA_APPDIR": str(tmp_path), "NVIDIA_CLARA_INPUTS": "in/series", "NVIDIA_CLARA_OUTPUTS": "out"}
    assert app.folders(env) == (tmp_path / "in" / "series", tmp_path / "out")


def test_clara_paths_win_over_inputs_and_outputs(tmp_path):
    env = {"NVIDIA_CLARA_APPDIR": str(tmp_path), "NVIDIA_CLARA_INPUTS": "input/x.mhd",
           "NVIDIA_CLARA_INPUTPATHS": f"payload:{tmp_path}/p;up/out:/other",
           "NVIDIA_CLARA_OUTPUTPATHS": "ai-vnet/seg:rel-out"}
    assert app.folders(env) == (tmp_path / "p", tmp_path / "rel-out")


def test_output_names(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    assert app.output_path(inp / "recon.mhd", inp, out) == out / "recon.seg.mhd"
    assert app.output_path(inp / "a" / "ct.NII.GZ", inp, out) == out / "a" / "ct.seg.mhd"
    assert app.output_path(inp / "b.nii", inp, out) == out / "b.seg.mhd"


# --------------------------------------------------------------------------- fast: errors


def test_no_input_files_is_a_clear_error(tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "notes.txt").write_text("not a volume")
    result = run_stage(stage_env(tmp_path, f"127.0.0.1:{free_port()}"))
    assert_one_error_line(result, 2, "no .mhd, .nii or .nii.gz file in input folder", str(tmp_path / "input"))
    assert not (tmp_path / "output").exists()


def test_missing_input_folder_is_a_clear_error(tmp_path):
    result = run_stage(stage_env(tmp_path, f"127.0.0.1:{free_port()}"))
    assert_one_error_line(result, 2, f"input folder {tmp_path / 'input'} does not exist")


def test_unreachable_triton_is_a_clear_error(tmp_path):
    shutil.copytree(PHANTOM_INPUT, tmp_path / "input")
    uri = f"127.0.0.1:{free_port()}"
    result = run_stage(stage_env(tmp_path, uri, TRITON_WAIT_SECONDS="0"))
    line = assert_one_error_line(result, 1, f"Triton at {uri} is not reachable", "NVIDIA_CLARA_TRTISURI")
    assert "Traceback" not in result.stderr, line
    assert not (tmp_path / "output").exists()


def test_dockerfile_copies_exist_and_the_runner_imports_with_the_stdlib_only(tmp_path):
    """No Docker engine here: check what the image would hold instead of building it.

    Every COPY source exists in the project root (the build context), and the copied
    clara_wf.runner imports in an interpreter without site-packages (-I -S).
    """
    dockerfile = (APP_DIR / "Dockerfile").read_text()
    assert re.search(r'^CMD \["python3", "-u", "main.py"\]$', dockerfile, re.M)
    assert re.search(r"^WORKDIR /app$", dockerfile, re.M)
    image = tmp_path / "image"
    for line in dockerfile.splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, dest = line.split()[1:]
        for source in sources:
            src = REPO / source
            assert src.exists(), f"Dockerfile copies {source}, which is not in the project root"
            target = image / dest.lstrip("/")
            if dest.endswith("/"):
                target = target / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, target)
    pythonpath = re.search(r"^ENV PYTHONPATH=(\S+)$", dockerfile, re.M).group(1)
    probe = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path.insert(0, {str(image) + pythonpath!r}); "
         "import clara_wf.runner; assert callable(clara_wf.runner.main)"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert (image / "app" / "main.py").is_file()
    requirements = (APP_DIR / "requirements.txt").read_text()
    for package in ("numpy", "SimpleITK", "tritonclient[http]"):
        assert package in requirements


# --------------------------------------------------------------------------- slow: real Triton


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    yield from triton_server(tmp_path_factory.mktemp("triton-state"))


@pytest.mark.slow
def test_phantom_segmentation_through_triton_matches_the_ground_truth(triton, tmp_path):
    """The reference job's input, the real main.py, a real Triton: Dice >= 0.9 per label."""
    shutil.copytree(PHANTOM_INPUT, tmp_path / "input")
    result = run_stage(stage_env(tmp_path, triton.uri))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = tmp_path / "output" / "recon.seg.mhd"
    assert f"ai-vnet: recon.mhd (128x128x64) -> {out}" in result.stdout
    assert (tmp_path / "output" / "recon.seg.raw").is_file()

    import SimpleITK as sitk

    seg, source = read_image(out), read_image(PHANTOM_INPUT / "recon.mhd")
    assert seg.GetPixelID() == sitk.sitkUInt8
    assert geometry(seg) == geometry(source)  # size, spacing, origin, direction
    report = phantom_module().dice_report(sitk.GetArrayFromImage(seg))
    assert all(value >= 0.9 for value in report.values()), report
    # What the labels mean, from the model's config, for dicom-writer's SEG.
    table = json.loads((tmp_path / "output" / "recon.seg.json").read_text())
    assert table["kind"] == "clara-wf/labels" and table["algorithm"] == {"name": MODEL_NAME, "version": "1"}
    assert [(e["value"], e["name"]) for e in table["labels"]] == [(1, "Soft tissue"), (2, "Lung"), (3, "Bone")]


@pytest.mark.slow
def test_geometry_is_kept_for_oblique_nifti_and_nested_inputs(triton, tmp_path):
    """Non-identity direction, odd spacing and origin; .nii.gz and a sub-folder; Clara *PATHS variables."""
    rng = np.random.RandomState(7)
    volume = rng.uniform(-1000, 1000, size=(6, 20, 24)).astype(np.int16)
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    inp, outp = tmp_path / "pipeline-input", tmp_path / "pipeline-output"
    mhd = write_volume(inp / "series" / "oblique.mhd", volume, (0.7, 0.9, 3.0), (-12.5, 40.0, 7.25), oblique)
    nii = write_volume(inp / "ct.nii.gz", volume[::-1].copy(), (1.5, 1.5, 2.0), (10.0, -20.0, 30.0), oblique)
    env = stage_env(tmp_path / "app", triton.uri,
                    NVIDIA_CLARA_INPUTPATHS=f"payload:{inp}", NVIDIA_CLARA_OUTPUTPATHS=f"ai-vnet/seg:{outp}")
    result = run_stage(env)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 2
    for written, name in ((mhd, outp / "series" / "oblique.seg.mhd"), (nii, outp / "ct.seg.mhd")):
        seg = read_image(name)
        size, spacing, origin, direction = geometry(seg)
        assert size == written.GetSize()
        assert spacing == pytest.approx(written.GetSpacing(), abs=1e-5)
        assert origin == pytest.approx(written.GetOrigin(), abs=1e-4)
        assert direction == pytest.approx(written.GetDirection(), abs=1e-5)


@pytest.mark.slow
def test_missing_model_is_a_clear_error(triton, tmp_path):
    shutil.copytree(PHANTOM_INPUT, tmp_path / "input")
    result = run_stage(stage_env(tmp_path, triton.uri, TRITON_MODEL_NAME="liver_v9"))
    assert_one_error_line(result, 1, "model 'liver_v9' is not ready on Triton at", triton.uri, MODEL_NAME)
    assert not (tmp_path / "output").exists()


@pytest.mark.slow
def test_uri_with_scheme_is_accepted(triton, tmp_path):
    shutil.copytree(PHANTOM_INPUT, tmp_path / "input")
    result = run_stage(stage_env(tmp_path, f"http://{triton.uri}/"))
    assert result.returncode == 0, result.stderr
