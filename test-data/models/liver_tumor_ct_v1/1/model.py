"""liver_tumor_ct_v1: a stand-in for a trained liver + liver-tumour CT network (Triton python backend).

STAND-IN: there are no trained weights in this project. This is a deterministic,
numpy-only algorithm that gives a meaningful mask on a contrast-enhanced (portal venous)
abdominal CT such as the phantom of tools/make_phantom.py:

* smooth  = 3x3 in-plane mean of the HU (noise 15 HU -> 5 HU);
* body    = voxels above -500 HU, holes filled slice by slice;
* liver   = body voxels whose smoothed HU lies in the enhanced-liver window [80, 125]
            (spleen, muscle, kidneys and vessels fall outside it), opened in-plane;
* tumour  = holes of the liver (filled slice by slice) whose smoothed HU is hypodense,
            [0, 75] - lesions that the liver surrounds;
* labels  : 0 background, 1 liver, 2 tumour.

It will not find a liver on a real scan with another contrast phase, nor a lesion at the
liver's edge: replace it with a trained network (see ../config.pbtxt) for real use.
"""

import json

import numpy as np

try:  # Only present inside Triton; the algorithm below is importable without it (tests).
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - outside Triton
    pb_utils = None

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"
BODY_MIN_HU = -500.0
LIVER_HU = (80.0, 125.0)
TUMOR_HU = (0.0, 75.0)
BACKGROUND, LIVER, TUMOR = 0, 1, 2


def _shifts(mask, pad_value):
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="edge" if pad_value is None else "constant",
               **({} if pad_value is None else {"constant_values": pad_value}))
    rows, cols = mask.shape[1], mask.shape[2]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            yield p[:, dy:dy + rows, dx:dx + cols]


def _mean3(hu):
    out = np.zeros(hu.shape, dtype=np.float32)
    for s in _shifts(hu, None):
        out += s
    return out / 9.0


def _erode2d(mask):
    out = mask.copy()
    for s in _shifts(mask, None):
        out &= s
    return out


def _dilate2d(mask):
    out = mask.copy()
    for s in _shifts(mask, False):
        out |= s
    return out


def _open2d(mask):
    return _dilate2d(_erode2d(mask)) & mask


def _fill_holes2d(mask):
    """Fill, in every slice, the background not reachable from the slice border (4-connected)."""
    bg = ~mask
    outside = np.logical_and.accumulate(bg, axis=1)
    outside |= np.logical_and.accumulate(bg[:, ::-1, :], axis=1)[:, ::-1, :]
    outside |= np.logical_and.accumulate(bg, axis=2)
    outside |= np.logical_and.accumulate(bg[:, :, ::-1], axis=2)[:, :, ::-1]
    while True:
        grown = outside.copy()
        grown[:, 1:, :] |= outside[:, :-1, :]
        grown[:, :-1, :] |= outside[:, 1:, :]
        grown[:, :, 1:] |= outside[:, :, :-1]
        grown[:, :, :-1] |= outside[:, :, 1:]
        grown &= bg
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def segment(volume):
    """Label an abdominal CT volume in HU (3-D, slice/row/column) - see the module docstring."""
    hu = np.asarray(volume, dtype=np.float32)
    if hu.ndim != 3:
        raise ValueError(f"{INPUT_NAME} must be a 3-D volume (slices, rows, columns), got shape {hu.shape}")
    smooth = _mean3(hu)
    body = _fill_holes2d(hu > BODY_MIN_HU)
    liver = _open2d(body & (smooth >= LIVER_HU[0]) & (smooth <= LIVER_HU[1]))
    tumor = _fill_holes2d(liver) & ~liver & (smooth >= TUMOR_HU[0]) & (smooth <= TUMOR_HU[1])
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[liver] = LIVER
    labels[tumor] = TUMOR
    return labels


class TritonPythonModel:
    """Triton python-backend entry point."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        names = {t["name"] for t in config.get("input", [])} | {t["name"] for t in config.get("output", [])}
        missing = {INPUT_NAME, OUTPUT_NAME} - names
        if missing:
            raise ValueError(f"config.pbtxt of liver_tumor_ct_v1 must declare {sorted(missing)}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                volume = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
                out = pb_utils.Tensor(OUTPUT_NAME, segment(volume))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # one bad request must not take the model down
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self):
        pass
