"""recon: filtered back-projection of parallel-beam CT projections (scikit-image).

    python3 -u main.py [--filter ramp|shepp-logan|cosine|hamming|hann]   (or RECON_FILTER)

Input: every sinogram in the input folder - a volume ``<name>.mhd`` (or ``.nii.gz``) with a
JSON description ``<name>.json`` of ``"kind": "clara-wf/parallel-beam-sinogram"``:

* voxels (numpy order) ``[slice, angle, detector bin]``: line integrals of the linear
  attenuation coefficient, ``p = -ln(I / I0) = integral of mu dl`` (dimensionless) - the
  log-normalised projections a CT engineer reconstructs from;
* ``angles_deg``: the projection angle of each row; ``detector_spacing_mm``: bin pitch
  (the reconstructed pixel size); ``slice_spacing_mm``, ``origin``; ``mu_water_per_mm``:
  the water attenuation used to turn mu into Hounsfield units, ``HU = 1000 (mu - mu_w) / mu_w``.

Each slice is reconstructed with ``skimage.transform.iradon`` (filtered back-projection,
ramp filter by default) on a square grid of detector-width pixels, and the volume is
written as ``<name>.mhd`` in HU (float32) with its geometry.

A volume that is already an image (dicom-reader's output: sidecar
``"kind": "clara-wf/dicom-series"``) is passed through unchanged with its sidecar, so
in the guide's ``ct`` workflow (dicom-reader -> recon -> ai-vnet -> dicom-writer) a CT
*image* series flows on to the model and the SEG references its instances; projections
come as sinograms (see docs/reference-pipeline.md).

Exit codes: 0 done, 1 I/O failure, 2 bad input; one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from clara_wf.payload import InputProblem, run_stage

STAGE = "recon"
SINOGRAM_KIND = "clara-wf/parallel-beam-sinogram"
SERIES_KIND = "clara-wf/dicom-series"
SUFFIXES = (".nii.gz", ".mhd", ".nii")
FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def log(message: str) -> None:
    print(f"{STAGE}: {message}", flush=True)


def _folder(entries, what):
    if not entries:
        raise InputProblem(f"no {what} folder: set NVIDIA_CLARA_{what.upper()}S or NVIDIA_CLARA_{what.upper()}PATHS")
    path = Path(entries[0].path)
    return path if path.is_dir() or not path.suffix else path.parent


def folders(env):
    from clara_wf.payload import ClaraPayload, PayloadError

    payload = ClaraPayload(env)
    try:
        return _folder(payload.input_entries, "input"), _folder(payload.output_entries, "output")
    except PayloadError as exc:
        raise InputProblem(str(exc)) from None


def stem(path: Path) -> str:
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def describe(volume: Path):
    side = volume.with_name(stem(volume) + ".json")
    if not side.is_file():
        return side, None
    try:
        data = json.loads(side.read_text())
    except ValueError as exc:
        raise InputProblem(f"{side.name} is not JSON: {exc}") from None
    return side, data if isinstance(data, dict) else None


def reconstruct(sinogram, desc, filter_name):
    """(slices, angles, bins) line integrals -> (slices, bins, bins) HU, float32."""
    import numpy as np
    from skimage.transform import iradon

    angles = np.asarray(desc.get("angles_deg") or [], dtype=float)
    if sinogram.ndim != 3 or angles.size != sinogram.shape[1]:
        raise InputProblem(f"sinogram is {sinogram.shape} (slices, angles, bins) but lists {angles.size} angles")
    pitch = float(desc.get("detector_spacing_mm") or 0)
    mu_w = float(desc.get("mu_water_per_mm") or 0)
    if pitch <= 0 or mu_w <= 0:
        raise InputProblem("detector_spacing_mm and mu_water_per_mm must be positive")
    bins = sinogram.shape[2]
    out = np.empty((sinogram.shape[0], bins, bins), dtype=np.float32)
    for k, plane in enumerate(sinogram):
        # iradon takes (bins, angles) in units of pixels: line integrals / pitch = mu per pixel.
        mu = iradon(plane.T.astype(np.float64) / pitch, theta=angles, filter_name=filter_name,
                    circle=True, output_size=bins)
        out[k] = 1000.0 * (mu - mu_w) / mu_w
    return out


def run(argv=None, env=None):
    import SimpleITK as sitk

    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog=STAGE)
    parser.add_argument("--filter", default=env.get("RECON_FILTER") or "ramp")
    args = parser.parse_args(argv)
    if args.filter not in FILTERS:
        raise InputProblem(f"filter {args.filter!r}: choose one of {', '.join(FILTERS)}")
    input_dir, output_dir = folders(env)
    if not input_dir.is_dir():
        raise InputProblem(f"input folder {input_dir} does not exist: put the sinograms (.mhd + .json) there")
    volumes = sorted(p for p in input_dir.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
    if not volumes:
        raise InputProblem(f"no sinogram or volume (.mhd, .nii.gz) in {input_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    done = 0
    for volume in volumes:
        side, desc = describe(volume)
        kind = (desc or {}).get("kind")
        rel = volume.relative_to(input_dir)
        if kind == SERIES_KIND:
            # Already reconstructed images (dicom-reader's output): hand them on untouched.
            image = sitk.ReadImage(str(volume))
            sitk.WriteImage(image, str(output_dir / volume.name), False)
            shutil.copyfile(side, output_dir / side.name)
            log(f"{rel}: image series {desc.get('series_instance_uid')}, already reconstructed: passed on")
            done += 1
            continue
        if kind != SINOGRAM_KIND:
            log(f"skipped {rel}: no {stem(volume)}.json of kind {SINOGRAM_KIND}")
            continue
        started = time.perf_counter()
        try:
            sino = sitk.GetArrayFromImage(sitk.ReadImage(str(volume)))
        except RuntimeError as exc:
            raise InputProblem(f"cannot read {rel}: {str(exc).strip().splitlines()[-1]}") from None
        hu = reconstruct(sino, desc, args.filter)
        image = sitk.GetImageFromArray(hu)
        pitch = float(desc["detector_spacing_mm"])
        image.SetSpacing((pitch, pitch, float(desc.get("slice_spacing_mm") or pitch)))
        n = hu.shape[1]
        origin = desc.get("origin") or [-(n - 1) * pitch / 2.0, -(n - 1) * pitch / 2.0, 0.0]
        image.SetOrigin([float(v) for v in origin])
        name = stem(volume)
        # The guide's names: recon.sino.mhd (projections) -> recon.mhd (what ai-vnet reads).
        target = output_dir / ((name[: -len(".sino")] if name.endswith(".sino") else name) + ".mhd")
        sitk.WriteImage(image, str(target), False)
        log(f"{rel}: {sino.shape[0]} slices x {sino.shape[1]} angles x {sino.shape[2]} bins -> {target.name} "
            f"{n}x{n}x{hu.shape[0]} HU, filtered back-projection ({args.filter}) "
            f"[{(time.perf_counter() - started) * 1000:.0f} ms]")
        done += 1
    if not done:
        raise InputProblem(f"nothing to reconstruct in {input_dir}: no sinogram (<name>.mhd + <name>.json of kind "
                           f"{SINOGRAM_KIND}) and no dicom-reader volume")
    return done


def main():
    return run_stage(run, STAGE)


if __name__ == "__main__":
    sys.exit(main())
