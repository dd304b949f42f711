"""The CT phantom: reproducible, small, plausible, with a ground truth the stand-in model
matches (checked here on the algorithm itself; through Triton in test_ai_vnet)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.triton import PHANTOM_INPUT, model_module, phantom_module, read_image

mp = phantom_module()


@pytest.fixture(scope="module")
def phantom():
    return mp.make_phantom()


def test_phantom_is_deterministic(phantom):
    hu, truth = phantom
    hu2, truth2 = mp.make_phantom()
    assert np.array_equal(hu, hu2) and np.array_equal(truth, truth2)


def test_committed_files_are_what_the_script_writes(capsys):
    assert mp.main(["--check"]) == 0, capsys.readouterr().err


def test_committed_files_are_small_and_plausible():
    mhd, raw = PHANTOM_INPUT / "recon.mhd", PHANTOM_INPUT / "recon.raw"
    assert mhd.stat().st_size + raw.stat().st_size <= 8 * 1024 * 1024
    image = read_image(mhd)
    assert image.GetSize() == mp.SIZE_XYZ
    assert image.GetSpacing() == pytest.approx(mp.SPACING_XYZ)
    assert image.GetOrigin() == pytest.approx(mp.origin_xyz())
    assert image.GetPixelIDTypeAsString() == "16-bit signed integer"


def test_hounsfield_values_by_structure(phantom):
    hu, truth = phantom
    median = {k: float(np.median(hu[truth == k])) for k in range(4)}
    assert median[0] == pytest.approx(-1000, abs=30)  # air
    assert -120 <= median[1] <= 60  # fat and soft tissue
    assert median[2] == pytest.approx(-850, abs=60)  # lung
    assert median[3] >= 500  # bone
    fractions = np.bincount(truth.ravel(), minlength=4) / truth.size
    assert fractions[0] > 0.4 and fractions[1] > 0.1 and fractions[2] > 0.02 and fractions[3] > 0.01


def test_dice():
    a = np.array([0, 1, 1, 2, 2, 0], dtype=np.uint8)
    assert mp.dice(a, a) == 1.0
    assert mp.dice(a, a, 2) == 1.0
    assert mp.dice(a, np.zeros_like(a)) == 0.0
    assert mp.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0  # nothing to find, nothing found
    assert mp.dice(a, np.array([0, 1, 0, 2, 2, 0]), 1) == pytest.approx(2 * 1 / 3)
    with pytest.raises(ValueError):
        mp.dice(a, a[:3])


def test_model_algorithm_segments_the_phantom(phantom):
    """segmentation_ct_v1's algorithm, run directly (no Triton): every label Dice >= 0.9."""
    hu, truth = phantom
    labels = model_module().segment(hu.astype(np.float32))
    assert labels.dtype == np.uint8 and labels.shape == hu.shape
    report = mp.dice_report(labels, truth)
    assert all(value >= 0.9 for value in report.values()), report


def test_model_rejects_a_non_3d_input():
    with pytest.raises(ValueError, match="3-D"):
        model_module().segment(np.zeros((4, 4), dtype=np.float32))
