"""dicom-reader: every DICOM image series of the input folder → a volume + a JSON sidecar.

    python3 -u main.py [--format mhd|nii.gz]      (or DICOM_READER_FORMAT; default mhd)

Walks the input folder (any depth, any file names, any order), reads every file with
pydicom and groups the objects by SeriesInstanceUID. Each image series becomes one
volume, written with SimpleITK as ``<SeriesInstanceUID>.mhd`` (+ ``.raw``) or ``.nii.gz``:

* slices (single-frame files and the frames of multi-frame objects alike) are ordered by
  ImagePositionPatient projected on the slice normal (row x column cosines) - never by
  file name or InstanceNumber; the slice spacing comes from those positions;
* direction cosines from ImageOrientationPatient, origin from the first slice;
* Modality LUT applied (RescaleSlope/Intercept, per frame for enhanced objects, and
  DoseGridScaling for RT Dose): the voxels are in the modality's units (HU for CT);
* compressed transfer syntaxes (JPEG lossless/baseline/extended, JPEG-LS, JPEG 2000, RLE,
  deflate, big endian) are decoded by pydicom with the pylibjpeg plugins.

Beside each volume, ``<SeriesInstanceUID>.json`` (the sidecar, ``"kind": "clara-wf/dicom-series"``)
holds the study/series/frame-of-reference UIDs, patient, modality and the SOP Instance UIDs
(and frame numbers) in volume order - what dicom-writer needs to reference the source.

Objects that are not images (SR, RTSTRUCT, RTPLAN, SEG, presentation states...) and files
that are not DICOM are skipped with a note. A truncated file, a series with a missing slice
(uneven spacing), slices of different sizes or orientations, or an undecodable pixel
encoding stop the stage with one line naming the file or series (exit 2). Slight spacing
jitter or a tilted gantry give a warning and a sound volume.

Folders come from clara_payload (NVIDIA_CLARA_INPUTPATHS/OUTPUTPATHS, else
NVIDIA_CLARA_APPDIR + NVIDIA_CLARA_INPUTS/OUTPUTS: the folder of ``input/input.mhd``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from clara_wf.payload import InputProblem, StageError, run_stage

STAGE = "dicom-reader"
SIDECAR_KIND = "clara-wf/dicom-series"
FORMATS = {"mhd": ".mhd", "nii.gz": ".nii.gz"}
# Storage classes that carry pixel data but are not slices of a volume of the patient.
NOT_VOLUMES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
}
POSITION_TOLERANCE_MM = 1e-3
SPACING_WARN = 0.01  # relative spacing deviation above which we warn
SPACING_FAIL = 0.10  # ... and above which a slice is missing (or extra)


def log(message: str) -> None:
    print(f"{STAGE}: {message}", flush=True)


# --- folders -------------------------------------------------------------------------------


def _folder(entries, what: str) -> Path:
    if not entries:
        raise InputProblem(f"no {what} folder: set NVIDIA_CLARA_{what.upper()}S or NVIDIA_CLARA_{what.upper()}PATHS")
    path = Path(entries[0].path)
    # The chart's NVIDIA_CLARA_INPUTS names a file ("input/input.mhd"): its folder is meant.
    return path if path.is_dir() or not path.suffix else path.parent


def folders(env=None):
    from clara_wf.payload import ClaraPayload, PayloadError

    payload = ClaraPayload(env)
    try:
        return _folder(payload.input_entries, "input"), _folder(payload.output_entries, "output")
    except PayloadError as exc:
        raise InputProblem(str(exc)) from None


# --- scanning ------------------------------------------------------------------------------


class Slice:
    """One 2-D image of a series: a single-frame object or one frame of a multi-frame one."""

    __slots__ = ("path", "sop_uid", "frame", "position", "row", "col", "spacing", "thickness",
                 "slope", "intercept", "shape")

    def __init__(self, path, sop_uid, frame, position, row, col, spacing, thickness, slope, intercept, shape):
        self.path, self.sop_uid, self.frame = path, sop_uid, frame
        self.position, self.row, self.col = position, row, col
        self.spacing, self.thickness = spacing, thickness
        self.slope, self.intercept, self.shape = slope, intercept, shape


def _floats(value, n):
    if value is None:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _item(ds, *path):
    """ds.Seq1[0].Seq2[0]... or None."""
    for keyword in path:
        seq = ds.get(keyword) if ds is not None else None
        if not seq:
            return None
        ds = seq[0]
    return ds


def _frame_attr(shared, frame, seq, attr):
    for group in (frame, shared):
        item = _item(group, seq)
        if item is not None and attr in item:
            return item.get(attr)
    return None


def slices_of(ds, path: Path, rel: str):
    """The slices of one image object (reads only the header)."""
    sop = str(ds.SOPInstanceUID)
    shape = (int(ds.Rows), int(ds.Columns))
    frames = int(ds.get("NumberOfFrames") or 1)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == frames:
        out = []
        for i, group in enumerate(per_frame):
            iop = _floats(_frame_attr(shared, group, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
            ipp = _floats(_frame_attr(shared, group, "PlanePositionSequence", "ImagePositionPatient"), 3)
            spacing = _floats(_frame_attr(shared, group, "PixelMeasuresSequence", "PixelSpacing"), 2)
            thick = _frame_attr(shared, group, "PixelMeasuresSequence", "SliceThickness")
            slope = _frame_attr(shared, group, "PixelValueTransformationSequence", "RescaleSlope")
            icpt = _frame_attr(shared, group, "PixelValueTransformationSequence", "RescaleIntercept")
            out.append(Slice(rel, sop, i + 1, ipp, iop[:3] if iop else None, iop[3:] if iop else None, spacing,
                             float(thick) if thick else None,
                             float(slope) if slope is not None else 1.0, float(icpt) if icpt is not None else 0.0,
                             shape))
        return out
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    spacing = _floats(ds.get("PixelSpacing"), 2)
    thick = float(ds.SliceThickness) if ds.get("SliceThickness") else None
    slope = float(ds.get("RescaleSlope") or 1.0)
    icpt = float(ds.get("RescaleIntercept") or 0.0)
    if "DoseGridScaling" in ds:
        slope = float(ds.DoseGridScaling)
    if frames == 1:
        return [Slice(rel, sop, None, ipp, iop[:3] if iop else None, iop[3:] if iop else None, spacing, thick,
                      slope, icpt, shape)]
    # Multi-frame without per-frame groups (RT Dose, NM, legacy): offsets along the normal.
    offsets = _floats(ds.get("GridFrameOffsetVector"), frames)
    if offsets is None and ipp is not None:
        step = float(ds.get("SpacingBetweenSlices") or thick or 1.0)
        offsets = [i * step for i in range(frames)]
    out = []
    for i in range(frames):
        pos = None
        if ipp is not None and iop is not None and offsets is not None:
            import numpy as np

            normal = np.cross(iop[:3], iop[3:])
            pos = list(np.asarray(ipp) + offsets[i] * normal)
        out.append(Slice(rel, sop, i + 1, pos, iop[:3] if iop else None, iop[3:] if iop else None, spacing, thick,
                         slope, icpt, shape))
    return out


def read_header(path: Path):
    """(dataset, None) or (None, why it was skipped). Raises InputProblem for broken DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            # No preamble/meta (older files): accept only what parses into a real SOP instance.
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            except Exception:
                return None, "not a DICOM file"
            if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
                return None, "not a DICOM file"
    except Exception as exc:  # EOF, bad VR ...: a DICOM file that cannot be read whole
        return None, f"!unreadable DICOM file ({_reason(exc)})"
    return ds, None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def scan(input_dir: Path):
    """{series uid: {"header": first dataset, "slices": [...], "files": {rel: path}}} and notes."""
    if not input_dir.is_dir():
        raise InputProblem(f"input folder {input_dir} does not exist: put the DICOM files there")
    series = {}
    notes = []
    files = sorted(p for p in input_dir.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(input_dir).as_posix()
        ds, why = read_header(path)
        if ds is None:
            if why.startswith("!"):
                raise InputProblem(f"{rel}: {why[1:]}")
            notes.append(f"skipped {rel}: {why}")
            continue
        sop_class = ds.get("SOPClassUID")
        name = getattr(sop_class, "name", str(sop_class))
        # The header is read without the pixel data: an image is what has the Image Pixel module.
        if "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
            notes.append(f"skipped {rel}: {name} is not an image")
            continue
        if str(sop_class) in NOT_VOLUMES:
            notes.append(f"skipped {rel}: {name} is not a source image")
            continue
        if int(ds.get("SamplesPerPixel") or 1) != 1:
            notes.append(f"skipped {rel}: {name} has colour pixels ({ds.get('PhotometricInterpretation')}), not a scalar volume")
            continue
        uid = str(ds.get("SeriesInstanceUID") or "")
        if not uid:
            raise InputProblem(f"{rel}: image without SeriesInstanceUID")
        entry = series.setdefault(uid, {"header": ds, "slices": [], "files": {}})
        entry["files"][rel] = path
        entry["slices"].extend(slices_of(ds, path, rel))
    return series, notes


# --- geometry ------------------------------------------------------------------------------


def plan_series(uid: str, entry: dict):
    """Order the slices and derive the geometry; returns (slices in order, geometry, warnings)."""
    import numpy as np

    slices = entry["slices"]
    warnings = []
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        fa = next(s.path for s in slices if s.shape == a)
        fb = next(s.path for s in slices if s.shape == b)
        raise InputProblem(f"series {uid}: slices of different sizes ({a[0]}x{a[1]} in {fa}, {b[0]}x{b[1]} in {fb})")
    rows, cols = slices[0].shape
    spacings = {tuple(s.spacing) for s in slices if s.spacing}
    if len(spacings) > 1:
        raise InputProblem(f"series {uid}: slices with different PixelSpacing ({', '.join(map(str, sorted(spacings)[:2]))})")
    pixel = list(spacings)[0] if spacings else None  # (row spacing, column spacing)
    geometric = all(s.position is not None and s.row is not None for s in slices)
    if geometric:
        row = np.asarray(slices[0].row)
        col = np.asarray(slices[0].col)
        for s in slices:
            if np.abs(np.asarray(s.row) - row).max() > 1e-4 or np.abs(np.asarray(s.col) - col).max() > 1e-4:
                raise InputProblem(f"series {uid}: {s.path} has another ImageOrientationPatient than {slices[0].path}")
        normal = np.cross(row, col)
        normal /= np.linalg.norm(normal)
        dist = np.array([float(np.dot(s.position, normal)) for s in slices])
        order = np.argsort(dist, kind="stable")
        slices = [slices[i] for i in order]
        dist = dist[order]
        if len(slices) > 1:
            gaps = np.diff(dist)
            k = int(np.argmin(gaps))
            if gaps[k] < POSITION_TOLERANCE_MM:
                raise InputProblem(
                    f"series {uid}: {_where(slices[k])} and {_where(slices[k + 1])} are at the same position "
                    f"({dist[k]:.3f} mm along the normal): several acquisitions or phases in one series?")
            step = float(np.median(gaps))
            deviation = np.abs(gaps - step) / step
            k = int(np.argmax(deviation))
            if deviation[k] > SPACING_FAIL:
                raise InputProblem(
                    f"series {uid}: uneven slice spacing, {gaps[k]:.3f} mm between {_where(slices[k])} and "
                    f"{_where(slices[k + 1])} where the others are {step:.3f} mm (a slice is missing?)")
            if deviation[k] > SPACING_WARN:
                warnings.append(f"slice spacing varies up to {deviation[k] * 100:.1f}% around {step:.3f} mm: "
                                f"the volume uses the mean, {float(np.mean(gaps)):.3f} mm")
            step = float(np.mean(gaps))
            # Positions off the normal line: the slices are sheared (gantry tilt).
            first = np.asarray(slices[0].position)
            off = [np.linalg.norm((np.asarray(s.position) - first) - np.dot(np.asarray(s.position) - first, normal) * normal)
                   for s in slices]
            if max(off) > 0.1 * max(step, 1e-6) and max(off) > 0.01:
                warnings.append(f"slices are sheared by up to {max(off):.2f} mm (gantry tilt): the volume is not resampled")
        else:
            step = float(slices[0].thickness or 1.0)
        origin = [float(v) for v in slices[0].position]
        direction = [row[0], col[0], normal[0], row[1], col[1], normal[1], row[2], col[2], normal[2]]
    else:
        warnings.append("no ImagePositionPatient/ImageOrientationPatient: slices ordered by instance and frame "
                        "number, geometry is nominal")
        step = float(slices[0].thickness or 1.0)
        slices = sorted(slices, key=lambda s: (s.path, s.frame or 0))
        origin = [0.0, 0.0, 0.0]
        direction = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    if pixel is None:
        warnings.append("no PixelSpacing: 1 mm pixels assumed")
        pixel = (1.0, 1.0)
    geometry = {
        "size": [cols, rows, len(slices)],
        "spacing": [float(pixel[1]), float(pixel[0]), step],
        "origin": origin,
        "direction": [float(v) for v in direction],
    }
    return slices, geometry, warnings


def _where(s: Slice) -> str:
    return s.path if s.frame is None else f"{s.path} frame {s.frame}"


# --- pixels --------------------------------------------------------------------------------


def read_volume(input_dir: Path, slices, geometry):
    """The voxels (z, y, x) with the Modality LUT applied; int16 when exact, else float32."""
    import numpy as np
    import pydicom

    cache = {}
    planes = []
    for s in slices:
        if s.path not in cache:
            cache.clear()  # keep one multi-frame object in memory at a time
            try:
                ds = pydicom.dcmread(input_dir / s.path)
                cache[s.path] = np.asarray(ds.pixel_array)
            except Exception as exc:
                ts = getattr(getattr(locals().get("ds"), "file_meta", None), "TransferSyntaxUID", None)
                how = f" ({getattr(ts, 'name', ts)})" if ts is not None else ""
                raise InputProblem(f"{s.path}: cannot decode the pixel data{how}: {_reason(exc)}") from None
        pixels = cache[s.path]
        plane = pixels[s.frame - 1] if s.frame is not None and pixels.ndim == 3 else pixels
        planes.append(plane.astype(np.float64) * s.slope + s.intercept)
    volume = np.stack(planes)
    exact = all(float(s.slope).is_integer() and float(s.intercept).is_integer() for s in slices)
    if exact and volume.min() >= -32768 and volume.max() <= 32767:
        return volume.astype(np.int16)
    return volume.astype(np.float32)


def write_volume(volume, geometry, target: Path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        sitk.WriteImage(image, str(target), target.name.endswith(".gz"))
    except RuntimeError as exc:
        raise StageError(f"cannot write {target}: {_reason(exc)}") from None


def sidecar(uid, entry, slices, geometry, volume_name, warnings):
    ds = entry["header"]

    def text(keyword):
        value = ds.get(keyword)
        return None if value is None or value == "" else str(value)

    return {
        "kind": SIDECAR_KIND,
        "version": 1,
        "volume": volume_name,
        "patient_id": text("PatientID"),
        "patient_name": text("PatientName"),
        "study_instance_uid": text("StudyInstanceUID"),
        "series_instance_uid": uid,
        "series_number": text("SeriesNumber"),
        "series_description": text("SeriesDescription"),
        "modality": text("Modality"),
        "sop_class_uid": text("SOPClassUID"),
        "frame_of_reference_uid": text("FrameOfReferenceUID"),
        **geometry,
        # Slice k of the volume is this instance (and frame, for multi-frame objects).
        "instances": [{"sop_instance_uid": s.sop_uid, "frame": s.frame, "file": s.path} for s in slices],
        "warnings": warnings,
    }


# --- the stage -----------------------------------------------------------------------------


def run(argv=None, env=None):
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog=STAGE, description="DICOM series -> volumes + sidecars")
    parser.add_argument("--format", choices=sorted(FORMATS), default=env.get("DICOM_READER_FORMAT") or "mhd")
    args = parser.parse_args(argv)
    if args.format not in FORMATS:
        raise InputProblem(f"DICOM_READER_FORMAT={args.format!r}: choose one of {', '.join(sorted(FORMATS))}")
    input_dir, output_dir = folders(env)
    series, notes = scan(input_dir)
    for note in notes:
        log(note)
    if not series:
        raise InputProblem(f"no DICOM image series under {input_dir}")
    plans = {uid: plan_series(uid, entry) for uid, entry in series.items()}  # every check before any write
    for uid, (slices, geometry, warnings) in sorted(plans.items()):
        started = time.perf_counter()
        volume = read_volume(input_dir, slices, geometry)
        name = uid + FORMATS[args.format]
        write_volume(volume, geometry, output_dir / name)
        data = sidecar(uid, series[uid], slices, geometry, name, warnings)
        tmp = output_dir / f".{uid}.json.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, output_dir / f"{uid}.json")
        for warning in warnings:
            log(f"warning: series {uid}: {warning}")
        log(f"series {uid} ({data['modality']}, {len(series[uid]['files'])} file(s)) -> {name} "
            f"{'x'.join(map(str, geometry['size']))} at {'/'.join(f'{v:g}' for v in geometry['spacing'])} mm "
            f"[{(time.perf_counter() - started) * 1000:.0f} ms]")
    return len(plans)


def main(argv=None):
    return run_stage(run, STAGE, argv)


if __name__ == "__main__":
    sys.exit(main())
