"""The liver + tumour stand-in model (liver_tumor_ct_v1) on the abdominal phantom: the
algorithm itself (fast; through Triton in test_reference_workflows' liver-seg run)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.triton import MODELS, load_file, phantom_module

mp = phantom_module()
model = load_file("liver_tumor_ct_v1_model", MODELS / "liver_tumor_ct_v1" / "1" / "model.py")


@pytest.fixture(scope="module")
def abdomen():
    return mp.make_abdomen()


def test_abdomen_is_deterministic_and_plausible(abdomen):
    hu, truth = abdomen
    assert hu.shape == (32, 128, 128) and hu.dtype == np.int16
    assert np.array_equal(hu, mp.make_abdomen()[0])
    assert np.median(hu[truth == mp.LIVER_LABEL]) == pytest.approx(mp.LIVER_HU, abs=10)
    assert np.median(hu[truth == mp.TUMOR_LABEL]) == pytest.approx(mp.TUMOR_HU, abs=10)
    assert (truth == mp.TUMOR_LABEL).sum() > 1000  # two tumours, a few cm each


def test_model_finds_liver_and_tumours(abdomen):
    hu, truth = abdomen
    labels = model.segment(hu.astype(np.float32))
    assert labels.dtype == np.uint8 and labels.shape == hu.shape
    assert mp.dice(labels, truth, mp.LIVER_LABEL) >= 0.95
    assert mp.dice(labels, truth, mp.TUMOR_LABEL) >= 0.8


def test_model_finds_no_liver_in_the_thorax():
    assert not model.segment(mp.make_phantom()[0].astype(np.float32)).any()


def test_model_config_declares_its_labels():
    config = (MODELS / "liver_tumor_ct_v1" / "config.pbtxt").read_text()
    assert '"name": "Liver"' in config and '"10200004", "SCT"' in config and "STAND-IN MODEL" in config
