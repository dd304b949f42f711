#!/usr/bin/env python3
"""Write the CT phantom the reference job uses, and know its ground truth.

    python tools/make_phantom.py                # writes the reference job's inputs (below)
    python tools/make_phantom.py --job-dir DIR  # somewhere else
    python tools/make_phantom.py --check        # the committed files are exactly what this script makes

Inputs of test-data/<job>: ai-vnet/input/recon.mhd + .raw (the volume), the same volume as a
DICOM series in dicom-reader/input/ct-phantom, and dicom-writer/input (ground truth label
map + label table + dicom-reader's sidecar of that series), an abdominal phantom (liver
with two tumours; see make_abdomen) as a second series in dicom-reader/input/ct-abdomen, and recon/input/recon.sino.mhd +
.json: parallel-beam projections of the 16 central slices (see make_sinogram).

It also writes the same volume as a DICOM CT Image Storage series (one file per slice,
``test-data/<job>/dicom-reader/input/ct-phantom/``), the input of the DICOM workflows.

The phantom is a thorax-like CT volume in Hounsfield units: air (-1000) around an
elliptic body whose size varies along z, a subcutaneous fat layer (-100), muscle and
organs (+40), a heart (+45), two lungs (-850), a rib cage of bone bands (+700), a
sternum and a spine (vertebral body and neural arch, +700) around a spinal canal (+20).
It is drawn on a grid twice as fine in each direction and averaged down (partial volume
at every edge, as a scanner has), then seeded Gaussian noise (15 HU) is added.

Size 128 x 128 x 64 voxels (x, y, z) at 3.0 x 3.0 x 2.5 mm - a 384 mm field of view, a
thorax CT resampled to 128 x 128 in-plane; int16, 2 MB of raw data.

Ground truth (what segmentation_ct_v1 labels): 0 air, 1 soft tissue (fat, muscle,
organs, canal), 2 lung, 3 bone - per voxel the label that covers most of it.
:func:`dice` compares a produced label volume with it.

Deterministic: geometry is analytic and the noise comes from numpy's legacy
``RandomState``, whose stream numpy keeps frozen across versions.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

JOB_ID = "00000000-0000-0000-0000-000000000000"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "test-data" / JOB_ID / "ai-vnet" / "input"
DICOM_OUT = ROOT / "test-data" / JOB_ID / "dicom-reader" / "input" / "ct-phantom"
NAME = "recon"

SIZE_XYZ = (128, 128, 64)
SPACING_XYZ = (3.0, 3.0, 2.5)
SEED = 20190225
NOISE_HU = 15.0
SUPERSAMPLE = 2

AIR, FAT, SOFT, HEART, LUNG, BONE, CANAL = -1000.0, -100.0, 40.0, 45.0, -850.0, 700.0, 20.0
BACKGROUND, SOFT_TISSUE, LUNG_LABEL, BONE_LABEL = 0, 1, 2, 3
LABEL_NAMES = {SOFT_TISSUE: "soft tissue", LUNG_LABEL: "lung", BONE_LABEL: "bone"}


def origin_xyz() -> Tuple[float, float, float]:
    """Physical position of voxel (0, 0, 0): the volume is centred on (0, 0, 0) mm."""
    return tuple(-(n - 1) * s / 2.0 for n, s in zip(SIZE_XYZ, SPACING_XYZ))  # type: ignore[return-value]


def _fine_axes():
    """Coordinates (mm) of the sub-voxel centres along z, y, x (broadcastable)."""
    axes = []
    for n, s, o in zip(SIZE_XYZ, SPACING_XYZ, origin_xyz()):
        step = s / SUPERSAMPLE
        start = o - s / 2.0 + step / 2.0
        axes.append((start + step * np.arange(n * SUPERSAMPLE)).astype(np.float32))
    x, y, z = axes
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _ellipse(y, x, cy, cx, ry, rx):
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _ellipsoid(z, y, x, cz, cy, cx, rz, ry, rx):
    return ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _fine_phantom():
    """HU and labels on the fine grid, shape (z, y, x) * SUPERSAMPLE."""
    z, y, x = _fine_axes()
    shape = (z.shape[0], y.shape[1], x.shape[2])
    hu = np.full(shape, AIR, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)

    def paint(mask, value, label):
        mask = np.broadcast_to(mask, shape)
        hu[mask] = value
        labels[mask] = label

    scale = 1.0 - 0.08 * (z / 80.0) ** 2  # the body narrows towards both ends
    a, b = 160.0 * scale, 110.0 * scale  # body semi-axes (x, y), mm
    paint(_ellipse(y, x, 0.0, 0.0, b, a), FAT, SOFT_TISSUE)
    paint(_ellipse(y, x, 0.0, 0.0, b - 12.0, a - 12.0), SOFT, SOFT_TISSUE)
    # Rib cage: an elliptic bone shell, present in 12 mm bands every 25 mm along z.
    ribs = (
        _ellipse(y, x, 0.0, 0.0, b - 30.0, a - 30.0)
        & ~_ellipse(y, x, 0.0, 0.0, b - 40.0, a - 40.0)
        & (np.mod(z + 80.0, 25.0) < 12.0)
    )
    paint(ribs, BONE, BONE_LABEL)
    for side in (-1.0, 1.0):
        paint(_ellipsoid(z, y, x, 10.0, 0.0, side * 65.0, 75.0, 50.0, 48.0), LUNG, LUNG_LABEL)
    paint(_ellipsoid(z, y, x, 0.0, -25.0, 20.0, 40.0, 35.0, 40.0), HEART, SOFT_TISSUE)
    paint(_ellipse(y, x, -95.0, 0.0, 6.0, 12.0), BONE, BONE_LABEL)  # sternum
    paint(_ellipse(y, x, 65.0, 0.0, 15.0, 15.0), BONE, BONE_LABEL)  # vertebral body
    paint(_ellipse(y, x, 88.0, 0.0, 11.0, 11.0), BONE, BONE_LABEL)  # neural arch
    paint(_ellipse(y, x, 88.0, 0.0, 6.0, 6.0), CANAL, SOFT_TISSUE)  # spinal canal
    return hu, labels


def _blocks(volume: np.ndarray) -> np.ndarray:
    f = SUPERSAMPLE
    nz, ny, nx = (s // f for s in volume.shape)
    return volume.reshape(nz, f, ny, f, nx, f)


def make_phantom(seed: int = SEED) -> Tuple[np.ndarray, np.ndarray]:
    """(hu, truth): int16 HU volume and uint8 ground-truth labels, numpy order (z, y, x)."""
    fine_hu, fine_labels = _fine_phantom()
    hu = _blocks(fine_hu).mean(axis=(1, 3, 5), dtype=np.float64)
    counts = np.stack([(_blocks(fine_labels) == k).sum(axis=(1, 3, 5)) for k in range(4)])
    truth = counts.argmax(axis=0).astype(np.uint8)
    noise = np.random.RandomState(seed).normal(0.0, NOISE_HU, size=hu.shape)
    hu = np.clip(np.rint(hu + noise), -1024, 3071).astype(np.int16)
    return hu, truth


def ground_truth() -> np.ndarray:
    """The phantom's labels (z, y, x), the reference a segmentation is scored against."""
    return make_phantom()[1]


def dice(produced: np.ndarray, truth: np.ndarray, label: Optional[int] = None) -> float:
    """Dice coefficient of one label (or of everything non-zero when label is None)."""
    produced, truth = np.asarray(produced), np.asarray(truth)
    if produced.shape != truth.shape:
        raise ValueError(f"shapes differ: {produced.shape} vs {truth.shape}")
    a = produced != 0 if label is None else produced == label
    b = truth != 0 if label is None else truth == label
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def dice_report(produced: np.ndarray, truth: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Dice of the body (all non-zero) and of every label."""
    truth = ground_truth() if truth is None else truth
    report = {"body": dice(produced, truth)}
    report.update({name: dice(produced, truth, k) for k, name in LABEL_NAMES.items()})
    return report


def write_phantom(out_dir: Path = DEFAULT_OUT, name: str = NAME) -> Path:
    """Write <out_dir>/<name>.mhd + .raw; return the .mhd path."""
    import SimpleITK as sitk

    hu, _ = make_phantom()
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(origin_xyz())
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.mhd"
    sitk.WriteImage(image, str(path), False)
    return path


def _uid(*parts: str) -> str:
    """A stable UID in the 2.25 (UUID) form, from a name-based UUID of ``parts``: same files on every run."""
    return "2.25.%d" % uuid.uuid5(uuid.NAMESPACE_URL, "clara-wf:phantom:" + ":".join(parts)).int


def write_ct_series(out_dir: Path = DICOM_OUT, hu: Optional[np.ndarray] = None, name: str = "phantom",
                    description: str = "CT phantom (clara-wf)", series_number: int = 2,
                    body_part: str = "CHEST") -> list:
    """Write ``hu`` (z, y, x; default the thorax phantom) as a CT Image Storage series.

    One file per slice, named by a hash of its SOP Instance UID (so the file order says
    nothing about the slice order) and InstanceNumber counting from the head down (as
    many scanners do): a reader must order slices by ImagePositionPatient. Stored values
    are unsigned with RescaleIntercept -1024, as CT scanners write them.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

    hu = make_phantom()[0] if hu is None else hu
    nz, ny, nx = hu.shape
    sx, sy, sz = SPACING_XYZ
    ox, oy, oz = (-(n - 1) * s / 2.0 for n, s in zip((nx, ny, nz), SPACING_XYZ))  # centred on (0, 0, 0)
    # One study for every series of the phantom patient.
    study, series, frame = _uid("phantom", "study"), _uid(name, "series"), _uid(name, "frame-of-reference")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(nz):
        sop = _uid(name, "instance", str(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20190225"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "103000"
        ds.AccessionNumber = "CWF0001"
        ds.Modality = "CT"
        ds.Manufacturer = "clara-wf"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "clara-wf reference job"
        ds.SeriesDescription = description
        ds.PatientName = "Phantom^Thorax"
        ds.PatientID = "CWF-PHANTOM-1"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = body_part
        ds.SliceThickness = f"{sz:g}"
        ds.KVP = "120"
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = nz - k
        ds.ImagePositionPatient = [f"{ox:g}", f"{oy:g}", f"{oz + k * sz:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{oz + k * sz:g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype("<u2").tobytes()
        path = out_dir / f"IM{hashlib.sha1(sop.encode()).hexdigest()[:10]}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _same_files(a: Path, b: Path, names: Iterable[str]) -> bool:
    return all((a / n).is_file() and (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def _same_tree(a: Path, b: Path) -> bool:
    """Same file names and bytes in both folders (nothing missing, nothing extra)."""
    def files(d: Path):
        return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) if d.is_dir() else []
    names = files(b)
    return files(a) == names and _same_files(a, b, names)


MU_WATER_PER_MM = 0.0192  # water at ~70 keV, the effective energy of a 120 kVp beam
SINO_SLICES = slice(24, 40)  # the 16 central slices of the thorax phantom (40 mm)
SINO_ANGLES = 180  # parallel beam, 0..179 degrees in 1-degree steps
SINO_PHOTONS = 1e6  # unattenuated photons per ray (I0): Poisson noise of the measurement
SINO_NAME = "recon.sino"


# --- the abdominal phantom (ai-livertumor's input) ------------------------------------------

ABD_SIZE_XYZ = (128, 128, 32)  # 3 x 3 x 2.5 mm voxels, like the thorax: 80 mm of upper abdomen
LIVER_HU, TUMOR_HU, SPLEEN_HU, KIDNEY_HU, AORTA_HU, GAS_HU = 100.0, 35.0, 60.0, 150.0, 180.0, -900.0
LIVER_LABEL, TUMOR_LABEL = 1, 2
ABDOMEN_LABEL_NAMES = {LIVER_LABEL: "liver", TUMOR_LABEL: "tumor"}
ABDOMEN_DICOM = "ct-abdomen"


def _abdomen_axes():
    """Sub-voxel centres (mm) along z, y, x of the abdominal volume, centred on (0, 0, 0)."""
    axes = []
    for n, s in zip(ABD_SIZE_XYZ, SPACING_XYZ):
        step = s / SUPERSAMPLE
        start = -(n - 1) * s / 2.0 - s / 2.0 + step / 2.0
        axes.append((start + step * np.arange(n * SUPERSAMPLE)).astype(np.float32))
    x, y, z = axes
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _fine_abdomen():
    """An upper abdomen in portal venous phase on the fine grid: an enhanced liver (patient's
    right, -x in DICOM's LPS) with two hypodense tumours, spleen, kidneys, aorta, gas in the
    colon, spine. Labels: liver and tumour only."""
    z, y, x = _abdomen_axes()
    shape = (z.shape[0], y.shape[1], x.shape[2])
    hu = np.full(shape, AIR, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)

    def paint(mask, value, label=BACKGROUND):
        mask = np.broadcast_to(mask, shape)
        hu[mask] = value
        labels[mask] = label

    paint(_ellipse(y, x, 0.0, 0.0, 115.0, 165.0), FAT)
    paint(_ellipse(y, x, 0.0, 0.0, 103.0, 153.0), SOFT)
    paint(_ellipsoid(z, y, x, 0.0, -10.0, -60.0, 50.0, 70.0, 75.0) & (x < 30.0), LIVER_HU, LIVER_LABEL)
    paint(_ellipsoid(z, y, x, 0.0, -10.0, 80.0, 30.0, 40.0, 25.0), SPLEEN_HU)
    for side in (-1.0, 1.0):
        paint(_ellipsoid(z, y, x, -15.0, 45.0, side * 55.0, 35.0, 25.0, 18.0), KIDNEY_HU)
    paint(_ellipse(y, x, 30.0, 15.0, 10.0, 10.0), AORTA_HU)
    paint(_ellipsoid(z, y, x, 5.0, -60.0, 40.0, 12.0, 10.0, 14.0), GAS_HU)
    paint(_ellipse(y, x, 55.0, 0.0, 17.0, 17.0), BONE)  # vertebral body
    paint(_ellipse(y, x, 80.0, 0.0, 12.0, 12.0), BONE)  # neural arch
    paint(_ellipse(y, x, 80.0, 0.0, 6.0, 6.0), CANAL)
    paint(_ellipsoid(z, y, x, 10.0, -20.0, -75.0, 18.0, 18.0, 18.0), TUMOR_HU, TUMOR_LABEL)
    paint(_ellipsoid(z, y, x, -20.0, 5.0, -50.0, 12.0, 12.0, 12.0), TUMOR_HU, TUMOR_LABEL)
    return hu, labels


def make_abdomen(seed: int = SEED + 1) -> Tuple[np.ndarray, np.ndarray]:
    """(hu, truth) of the abdominal phantom: 0 background, 1 liver, 2 liver tumour (z, y, x)."""
    fine_hu, fine_labels = _fine_abdomen()
    hu = _blocks(fine_hu).mean(axis=(1, 3, 5), dtype=np.float64)
    counts = np.stack([(_blocks(fine_labels) == k).sum(axis=(1, 3, 5)) for k in range(3)])
    truth = counts.argmax(axis=0).astype(np.uint8)
    noise = np.random.RandomState(seed).normal(0.0, NOISE_HU, size=hu.shape)
    return np.clip(np.rint(hu + noise), -1024, 3071).astype(np.int16), truth


def noiseless_hu() -> np.ndarray:
    """The thorax phantom's HU (z, y, x) without the image noise (the truth a reconstruction is scored against)."""
    fine_hu, _ = _fine_phantom()
    return _blocks(fine_hu).mean(axis=(1, 3, 5), dtype=np.float64)


def make_sinogram(seed: int = SEED) -> Tuple[np.ndarray, dict]:
    """Parallel-beam projections of the central slices: (sinogram, its description).

    Sinogram voxels, numpy order [slice, angle, detector bin], are log-normalised line
    integrals ``p = -ln(I / I0)`` of the linear attenuation ``mu = mu_w (1 + HU / 1000)``,
    simulated with scikit-image's radon transform and Poisson counting noise (I0 photons per
    ray); the detector has one bin per image pixel (3 mm), 128 bins over the 384 mm field.
    """
    from skimage.transform import radon

    hu = noiseless_hu()[SINO_SLICES]
    theta = np.arange(SINO_ANGLES, dtype=np.float64) * (180.0 / SINO_ANGLES)
    rng = np.random.RandomState(seed + 2)
    pitch = SPACING_XYZ[0]
    planes = []
    for plane in hu:
        mu = np.clip(MU_WATER_PER_MM * (1.0 + plane / 1000.0), 0.0, None)
        line_integrals = radon(mu, theta=theta, circle=True).T * pitch  # (angles, bins), radon sums per pixel
        counts = rng.poisson(SINO_PHOTONS * np.exp(-line_integrals))
        planes.append(-np.log(np.maximum(counts, 1) / SINO_PHOTONS))
    sinogram = np.asarray(planes, dtype=np.float32)
    ox, oy, oz = origin_xyz()
    description = {
        "kind": "clara-wf/parallel-beam-sinogram",
        "version": 1,
        "layout": "[slice, angle, detector bin] (numpy order; MetaImage x = bin, y = angle, z = slice)",
        "values": "line integrals p = -ln(I/I0) of the linear attenuation coefficient (dimensionless)",
        "angles_deg": [float(a) for a in theta],
        "detector_spacing_mm": pitch,
        "slice_spacing_mm": SPACING_XYZ[2],
        "origin": [ox, oy, oz + SINO_SLICES.start * SPACING_XYZ[2]],
        "mu_water_per_mm": MU_WATER_PER_MM,
        "photons_per_ray": SINO_PHOTONS,
        "source": "tools/make_phantom.py: thorax phantom slices %d-%d" % (SINO_SLICES.start, SINO_SLICES.stop - 1),
    }
    return sinogram, description


def write_sinogram(out_dir: Path) -> Path:
    """recon's input: ``recon.sino.mhd`` (+ .zraw) and ``recon.sino.json``."""
    import json

    import SimpleITK as sitk

    sinogram, description = make_sinogram()
    image = sitk.GetImageFromArray(sinogram)
    image.SetSpacing((description["detector_spacing_mm"], 180.0 / SINO_ANGLES, description["slice_spacing_mm"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{SINO_NAME}.mhd"
    sitk.WriteImage(image, str(path), True)
    (out_dir / f"{SINO_NAME}.json").write_text(json.dumps(description, indent=1) + "\n")
    return path


def write_writer_input(out_dir: Path, job_dir: Path) -> None:
    """dicom-writer's own input (the `dicom-writer-only` workflow): the thorax phantom's ground
    truth as a label map named after the series, its label table, and dicom-reader's sidecar
    for the series in ``job_dir/dicom-reader/input`` (made by the real reader, the one home of
    that format)."""
    import importlib.util
    import json
    import shutil

    import SimpleITK as sitk

    spec = importlib.util.spec_from_file_location("dicom_reader_main", ROOT / "apps" / "dicom-reader" / "main.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp)
        shutil.copytree(job_dir / "dicom-reader" / "input" / DICOM_OUT.name, app / "input" / DICOM_OUT.name)
        env = {"NVIDIA_CLARA_APPDIR": str(app), "NVIDIA_CLARA_INPUTS": "input/x.mhd", "NVIDIA_CLARA_OUTPUTS": "output/x.mhd"}
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            reader.run([], env=env)
        (sidecar,) = (app / "output").glob("*.json")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sidecar, out_dir / sidecar.name)
        name = sidecar.name[: -len(".json")]
        volume = sitk.ReadImage(str(app / "output" / f"{name}.mhd"))
    labels = sitk.GetImageFromArray(ground_truth())
    labels.CopyInformation(volume)
    sitk.WriteImage(labels, str(out_dir / f"{name}.seg.mhd"), True)
    table = {"kind": "clara-wf/labels", "algorithm": {"name": "phantom ground truth", "version": "1"}, "labels": [
        {"value": SOFT_TISSUE, "name": "Soft tissue", "category": ["85756007", "SCT", "Tissue"],
         "type": ["87784001", "SCT", "Soft tissue"]},
        {"value": LUNG_LABEL, "name": "Lung", "category": ["123037004", "SCT", "Anatomical Structure"],
         "type": ["39607008", "SCT", "Lung"]},
        {"value": BONE_LABEL, "name": "Bone", "category": ["85756007", "SCT", "Tissue"],
         "type": ["272673000", "SCT", "Bone"]}]}
    (out_dir / f"{name}.seg.json").write_text(json.dumps(table, indent=1) + "\n")


def write_all(job_dir: Path) -> List[str]:
    """Every input of the reference job, under ``job_dir``; returns the folders written."""
    made = []
    write_phantom(job_dir / "ai-vnet" / "input")
    made.append("ai-vnet/input")
    series = job_dir / "dicom-reader" / "input" / DICOM_OUT.name
    if series.is_dir():
        shutil.rmtree(series)
    write_ct_series(series)
    made.append(f"dicom-reader/input/{DICOM_OUT.name}")
    abdomen = job_dir / "dicom-reader" / "input" / ABDOMEN_DICOM
    if abdomen.is_dir():
        shutil.rmtree(abdomen)
    write_ct_series(abdomen, make_abdomen()[0], name="abdomen", description="CT abdomen phantom (clara-wf)",
                    series_number=3, body_part="ABDOMEN")
    made.append(f"dicom-reader/input/{ABDOMEN_DICOM}")
    writer = job_dir / "dicom-writer" / "input"
    if writer.is_dir():
        shutil.rmtree(writer)
    write_writer_input(writer, job_dir)
    made.append("dicom-writer/input")
    recon = job_dir / "recon" / "input"
    if recon.is_dir():
        shutil.rmtree(recon)
    write_sinogram(recon)
    made.append("recon/input")
    return made


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-dir", type=Path, default=DEFAULT_OUT.parent.parent,
                        help=f"the job folder the inputs go to (default {DEFAULT_OUT.parent.parent})")
    parser.add_argument("--check", action="store_true", help="verify the files in --job-dir instead of writing them")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            made = write_all(Path(tmp))
            for folder in made:
                if not _same_tree(args.job_dir / folder, Path(tmp) / folder):
                    print(f"make_phantom: {args.job_dir / folder} differs from what this script writes: "
                          f"run python tools/make_phantom.py", file=sys.stderr)
                    return 1
        print(f"{args.job_dir}: {', '.join(made)} up to date")
        return 0
    for folder in write_all(args.job_dir):
        print(f"wrote {args.job_dir / folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
