"""segmentation_ct_v1: a stand-in for a trained CT segmentation network (Triton python backend).

There are no trained V-Net weights in this project, so this model is an honest,
deterministic algorithm that still gives a meaningful mask on CT:

* body    = voxels above -500 HU, opened in-plane (removes noise in the air), holes
            filled slice by slice (so air inside the body - lungs, bowel - stays inside);
* lung    = body voxels below -400 HU, opened in-plane;
* bone    = body voxels above +300 HU, isolated voxels removed (fewer than 3 of their 8
            in-plane neighbours are bone) - an opening would erase thin ribs;
* labels  : 0 background/air, 1 soft tissue (rest of the body: fat, muscle, organs),
            2 lung, 3 bone.

Input ``INPUT__0`` is a float32 volume in Hounsfield units in numpy order (slice, row,
column); output ``OUTPUT__0`` is a uint8 label volume of the same shape.

It uses numpy only, so it loads with the python and numpy of the official
``nvcr.io/nvidia/tritonserver`` image on a GPU cluster as well as with the tritonserver
that the ``nvidia-pytriton`` wheel bundles on a laptop. To replace it with a trained
network see the comments in ``../config.pbtxt``.

Nothing here touches ``sys.path``: with the pytriton-bundled server the stub finds the
virtualenv (and its numpy<2) because clara_wf.triton_local puts the venv's ``bin`` first
on PATH - a hook here would be too late, the stub imports numpy before this file.
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
LUNG_MAX_HU = -400.0
BONE_MIN_HU = 300.0

BACKGROUND, SOFT_TISSUE, LUNG, BONE = 0, 1, 2, 3


def _erode2d(mask):
    """3x3 in-plane erosion of a (slices, rows, cols) boolean volume; outside counts as set."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="edge")
    out = mask.copy()
    rows, cols = mask.shape[1], mask.shape[2]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out &= p[:, dy:dy + rows, dx:dx + cols]
    return out


def _dilate2d(mask):
    """3x3 in-plane dilation of a (slices, rows, cols) boolean volume."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="constant", constant_values=False)
    out = mask.copy()
    rows, cols = mask.shape[1], mask.shape[2]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= p[:, dy:dy + rows, dx:dx + cols]
    return out


def _open2d(mask):
    return _dilate2d(_erode2d(mask)) & mask


def _despeckle2d(mask, min_neighbours=3):
    """Keep a voxel only if at least ``min_neighbours`` of its 8 in-plane neighbours are set."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="constant", constant_values=False).astype(np.uint8)
    rows, cols = mask.shape[1], mask.shape[2]
    count = np.zeros(mask.shape, dtype=np.uint8)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                count += p[:, dy:dy + rows, dx:dx + cols]
    return mask & (count >= min_neighbours)


def _fill_holes2d(mask):
    """Fill, in every slice, the background that cannot be reached from the slice border.

    Seeds the outside with four straight scans from the borders, then grows it
    (4-connected, through background only) until it stops changing - exact, and only a
    few iterations for body-like shapes.
    """
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
    """Label a CT volume in HU (3-D, slice/row/column) - see the module docstring."""
    hu = np.asarray(volume, dtype=np.float32)
    if hu.ndim != 3:
        raise ValueError(f"{INPUT_NAME} must be a 3-D volume (slices, rows, columns), got shape {hu.shape}")
    body = _fill_holes2d(_open2d(hu > BODY_MIN_HU))
    lung = _open2d(body & (hu < LUNG_MAX_HU))
    bone = _despeckle2d(body & (hu > BONE_MIN_HU))
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[body] = SOFT_TISSUE
    labels[lung] = LUNG
    labels[bone] = BONE
    return labels


class TritonPythonModel:
    """Triton python-backend entry point."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        names = {t["name"] for t in config.get("input", [])} | {t["name"] for t in config.get("output", [])}
        missing = {INPUT_NAME, OUTPUT_NAME} - names
        if missing:
            raise ValueError(f"config.pbtxt of segmentation_ct_v1 must declare {sorted(missing)}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                volume = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
                labels = segment(volume)
                out = pb_utils.Tensor(OUTPUT_NAME, labels)
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # one bad request must not take the model down
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self):
        pass
