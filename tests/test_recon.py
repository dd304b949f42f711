"""recon: filtered back-projection (scikit-image) of the shipped parallel-beam projections
of the thorax phantom, scored against the phantom; images from dicom-reader pass through."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.triton import JOB, REPO, load_file, phantom_module, read_image
from stage_helpers import folders_env, one_error_line, run_app

RECON_DIR = REPO / "apps" / "recon"
SINOGRAM = REPO / "test-data" / JOB / "recon" / "input"
recon = load_file("recon_main", RECON_DIR / "main.py")
mp = phantom_module()


def reconstruction_error(hu: np.ndarray) -> dict:
    """HU error of a reconstruction of the sinogram's slices against the noiseless phantom, inside the body."""
    truth = mp.noiseless_hu()[mp.SINO_SLICES]
    body = truth > -500
    error = hu[body] - truth[body]
    return {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
            "median": float(np.median(np.abs(error)))}


def test_fbp_of_the_shipped_projections_gives_the_phantom(tmp_path, capsys):
    import SimpleITK as sitk

    shutil.copytree(SINOGRAM, tmp_path / "input")
    recon.run([], env=folders_env(tmp_path))
    image = read_image(tmp_path / "output" / "recon.mhd")
    assert image.GetSize() == (128, 128, 16)
    assert image.GetSpacing() == pytest.approx(mp.SPACING_XYZ)
    x0, y0, z0 = mp.origin_xyz()
    assert image.GetOrigin() == pytest.approx((x0, y0, z0 + mp.SINO_SLICES.start * mp.SPACING_XYZ[2]))
    error = reconstruction_error(sitk.GetArrayFromImage(image))
    print(f"recon error vs phantom (HU, inside the body): {error}")
    # Ramp-filtered FBP of 180 noisy views: streaks at bone edges dominate the RMSE.
    assert error["rmse"] < 80 and error["median"] < 25, error
    assert "filtered back-projection (ramp)" in capsys.readouterr().out


def test_committed_sinogram_is_what_the_phantom_tool_writes():
    description = json.loads((SINOGRAM / "recon.sino.json").read_text())
    assert description["kind"] == "clara-wf/parallel-beam-sinogram" and len(description["angles_deg"]) == 180
    sino = read_image(SINOGRAM / "recon.sino.mhd")
    assert sino.GetSize() == (128, 180, 16)


def test_dicom_reader_volumes_pass_through(tmp_path):
    import SimpleITK as sitk

    (tmp_path / "input").mkdir()
    image = sitk.Image(8, 8, 3, sitk.sitkInt16) + 7
    sitk.WriteImage(image, str(tmp_path / "input" / "1.2.3.mhd"))
    (tmp_path / "input" / "1.2.3.json").write_text(json.dumps({"kind": "clara-wf/dicom-series",
                                                                 "series_instance_uid": "1.2.3"}))
    recon.run([], env=folders_env(tmp_path))
    assert (tmp_path / "output" / "1.2.3.json").is_file()
    assert sitk.GetArrayFromImage(read_image(tmp_path / "output" / "1.2.3.mhd")).max() == 7


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "input").mkdir()
    assert "no sinogram or volume" in one_error_line(run_app(RECON_DIR, folders_env(tmp_path)), "recon")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(16, 10, 2, sitk.sitkFloat32), str(tmp_path / "input" / "x.sino.mhd"))
    (tmp_path / "input" / "x.sino.json").write_text(json.dumps({
        "kind": "clara-wf/parallel-beam-sinogram", "angles_deg": [0, 90], "detector_spacing_mm": 1,
        "mu_water_per_mm": 0.02}))
    line = one_error_line(run_app(RECON_DIR, folders_env(tmp_path)), "recon")
    assert "lists 2 angles" in line
