"""dicom-writer: label maps → DICOM Segmentation objects (highdicom) on their source series.

    python3 -u main.py

For every label map in the input folder (``<name>.seg.mhd`` / ``.seg.nii.gz``, as ai-vnet
and ai-livertumor write them; any ``.mhd``/``.nii``/``.nii.gz`` of an integer type when
it is the only one) the stage

1. finds the source series through dicom-reader's sidecar ``<name>.json``
   (``"kind": "clara-wf/dicom-series"``): next to the label map, in another input folder
   (DAG workflows), or anywhere in the job's payload - so it works after any AI stage
   that keeps the reader's volume name;
2. finds the source DICOM files in the payload (the sidecar lists their SOP Instance UIDs
   and paths in volume order);
3. writes ``<name>.seg.dcm``, a DICOM Segmentation (highdicom): one segment per label
   present, with SNOMED CT category/type codes and the algorithm's name and version
   (from the AI stage's ``<name>.seg.json`` label table; generic codes without one), frames
   aligned with the source slices and referencing the source instances.

With no label map but dicom-reader's own volumes (``dicom-reader -> dicom-writer``, the
guide's dicom-reader-writer), each volume goes back to DICOM as a derived image series in
``<output>/<new SeriesInstanceUID>/`` (see :func:`write_image_series`).

The payload is ``$NVIDIA_CLARA_PAYLOADS`` when set, else ``/payloads`` (the chart mounts
the whole job payload there in every container), else - the local engine without a
sandbox - the folder two levels above the resolved input folder (payload/<stage>/<folder>).

Exit codes: 0 done, 1 I/O failure, 2 bad input (no label map, no sidecar, no source
files, geometry that does not match); one line on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from clara_wf.payload import InputProblem, StageError, run_stage

STAGE = "dicom-writer"
VERSION = "0.1.0"
SIDECAR_KIND = "clara-wf/dicom-series"
LABELS_KIND = "clara-wf/labels"
VOLUME_SUFFIXES = (".nii.gz", ".mhd", ".nii")
SEG_TAG = ".seg"
# Codes for a label without a table (SNOMED CT): "Tissue" / "Tissue".
GENERIC = {"category": ["85756007", "SCT", "Tissue"], "type": ["85756007", "SCT", "Tissue"]}


def log(message: str) -> None:
    print(f"{STAGE}: {message}", flush=True)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- folders -------------------------------------------------------------------------------


def _as_folder(path: str) -> Path:
    p = Path(path)
    return p if p.is_dir() or not p.suffix else p.parent


def folders(env):
    """(input folders, output folder): every input entry (DAG workflows may give several)."""
    from clara_wf.payload import ClaraPayload, PayloadError

    payload = ClaraPayload(env)
    try:
        inputs = [_as_folder(e.path) for e in payload.input_entries]
        outputs = [_as_folder(e.path) for e in payload.output_entries]
    except PayloadError as exc:
        raise InputProblem(str(exc)) from None
    if not inputs or not outputs:
        raise InputProblem("no input or output folder: set NVIDIA_CLARA_INPUTS/OUTPUTS or NVIDIA_CLARA_INPUTPATHS/OUTPUTPATHS")
    return inputs, outputs[0]


def payload_root(env, first_input: Path) -> Path:
    if env.get("NVIDIA_CLARA_PAYLOADS"):
        return Path(env["NVIDIA_CLARA_PAYLOADS"])
    mounted = Path("/payloads")
    if mounted.is_dir() and any(mounted.iterdir()):
        return mounted
    return first_input.resolve().parent.parent


# --- finding things ------------------------------------------------------------------------


def volume_name(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name


def own_sidecar(volume: Path):
    """The reader's sidecar right beside a volume, when the volume is the reader's own (an image)."""
    path = volume.with_name(volume_name(volume) + ".json")
    try:
        data = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
    return (path, data) if isinstance(data, dict) and data.get("kind") == SIDECAR_KIND else None


def find_label_maps(inputs):
    found = []
    for folder in inputs:
        if not folder.is_dir():
            raise InputProblem(f"input folder {folder} does not exist: the label maps of the AI stage go there")
        found += sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
    seg = [p for p in found if volume_name(p).endswith(SEG_TAG)]
    if not seg and found and all(own_sidecar(p) for p in found):
        return []  # only the reader's own image volumes: write them back as image series
    if seg:
        return seg
    if len(found) == 1:
        return found
    where = ", ".join(str(f) for f in inputs)
    if not found:
        raise InputProblem(f"no label map (<name>.seg.mhd or .seg.nii.gz) in {where}")
    raise InputProblem(f"{len(found)} volumes in {where} and none named <name>.seg.mhd: which are label maps?")


def _sidecars(folder: Path):
    for path in folder.rglob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind") == SIDECAR_KIND:
            yield path, data


def find_sidecar(label_map: Path, inputs, payload: Path):
    """The reader's sidecar for this label map: by name first, then the only one of its size."""
    import SimpleITK as sitk

    stem = volume_name(label_map)
    base = stem[: -len(SEG_TAG)] if stem.endswith(SEG_TAG) else stem
    places = [label_map.parent, *inputs, payload]
    for place in places:
        if place.is_dir():
            for path, data in _sidecars(place):
                if path.name == f"{base}.json":
                    return path, data
    size = list(sitk.ReadImage(str(label_map)).GetSize())
    same_size = {}
    for place in places:
        if place.is_dir():
            for path, data in _sidecars(place):
                if data.get("size") == size:
                    same_size.setdefault(data.get("series_instance_uid"), (path, data))
    if len(same_size) == 1:
        return next(iter(same_size.values()))
    raise InputProblem(
        f"no dicom-reader sidecar {base}.json for {label_map.name} in the payload {payload}"
        + (f" ({len(same_size)} series of its size)" if same_size else "")
        + ": the writer needs the source series - run dicom-reader earlier in the workflow")


def find_sources(sidecar_path: Path, data: dict, payload: Path):
    """The source datasets in volume order (one per slice; a multi-frame object repeats)."""
    import pydicom

    instances = data.get("instances") or []
    if not instances:
        raise InputProblem(f"{sidecar_path.name} lists no source instances")
    files = [i["file"] for i in instances]
    roots = [payload / "dicom-reader" / "input", payload / "input", payload / "dicom-server"]
    roots += sorted(p for p in payload.glob("*/*") if p.is_dir()) + sorted(p for p in payload.glob("*") if p.is_dir())
    for root in roots:
        if all((root / f).is_file() for f in files):
            first = pydicom.dcmread(root / files[0], stop_before_pixels=True)
            if first.SOPInstanceUID == instances[0]["sop_instance_uid"]:
                return _load(root, instances)
    # Moved or renamed: match by SOP Instance UID over the payload's DICOM files.
    wanted = {i["sop_instance_uid"] for i in instances}
    where = {}
    for path in payload.rglob("*"):
        if path.is_file() and not path.name.endswith((".json", ".mhd", ".raw", ".gz", ".nii", ".png")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            except Exception:
                continue
            uid = str(ds.get("SOPInstanceUID", ""))
            if uid in wanted:
                where[uid] = path
    missing = wanted - set(where)
    if missing:
        raise InputProblem(f"{len(missing)} of the {len(wanted)} source instances of series "
                           f"{data.get('series_instance_uid')} are not in the payload {payload} (e.g. {sorted(missing)[0]})")
    return _load(None, instances, where)


def _load(root, instances, where=None):
    import pydicom

    cache = {}
    out = []
    for i in instances:
        path = root / i["file"] if root is not None else where[i["sop_instance_uid"]]
        if path not in cache:
            try:
                cache[path] = pydicom.dcmread(path)
            except Exception as exc:
                raise InputProblem(f"cannot read source {path}: {_reason(exc)}") from None
        out.append(cache[path])
    return out


def label_table(label_map: Path):
    """The AI stage's ``<name>.seg.json`` (labels with codes, algorithm) or None."""
    path = label_map.parent / (volume_name(label_map) + ".json")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InputProblem(f"{path.name} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != LABELS_KIND:
        return None
    return data


# --- the SEG -------------------------------------------------------------------------------


def _code(triple):
    import highdicom as hd

    value, scheme, meaning = triple
    return hd.sr.CodedConcept(value=str(value), scheme_designator=str(scheme), meaning=str(meaning))


def build_seg(label_map: Path, sidecar: dict, sources, table, series_number=300):
    import highdicom as hd
    import numpy as np
    import SimpleITK as sitk
    from pydicom.sr.codedict import codes

    image = sitk.ReadImage(str(label_map))
    labels = sitk.GetArrayFromImage(image)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputProblem(f"{label_map.name} holds {labels.dtype} values, not integer labels")
    size = list(image.GetSize())
    if size != sidecar.get("size"):
        raise InputProblem(f"{label_map.name} is {'x'.join(map(str, size))} but series "
                           f"{sidecar.get('series_instance_uid')} is {'x'.join(map(str, sidecar.get('size', [])))}")
    present = [int(v) for v in np.unique(labels) if v != 0]
    if not present:
        return None, []
    info = {int(e["value"]): e for e in (table or {}).get("labels", [])}
    algorithm = (table or {}).get("algorithm") or {}
    ident = hd.AlgorithmIdentificationSequence(
        name=str(algorithm.get("name") or "unknown"), version=str(algorithm.get("version") or "unknown"),
        family=codes.cid7162.ArtificialIntelligence)
    descriptions, segment_of = [], {}
    for number, value in enumerate(present, start=1):
        entry = info.get(value, {})
        segment_of[value] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(entry.get("name") or f"label {value}"),
            segmented_property_category=_code(entry.get("category") or GENERIC["category"]),
            segmented_property_type=_code(entry.get("type") or GENERIC["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ident,
            tracking_uid=hd.UID(), tracking_id=f"{sidecar.get('series_instance_uid')}:{value}",
        ))
    # Segment numbers 1..N in a (frames, rows, cols) array: highdicom reads it as a label map.
    relabel = np.zeros(int(labels.max()) + 1, dtype=np.uint8)
    for value, number in segment_of.items():
        relabel[value] = number
    mask = relabel[labels]
    unique_sources = list({id(ds): ds for ds in sources}.values())
    multiframe = len(unique_sources) < len(sources)
    kwargs = {}
    if multiframe:  # one enhanced object: frames follow its per-frame positions (the reader's order)
        kwargs["plane_positions"] = [hd.PlanePositionSequence(
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            image_position=_position(sidecar, k)) for k in range(len(sources))]
    seg = hd.seg.Segmentation(
        source_images=unique_sources if multiframe else sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="clara-wf",
        manufacturer_model_name=f"{STAGE} ({ident.Name if hasattr(ident, 'Name') else 'AI'})",
        software_versions=VERSION,
        device_serial_number="0",
        content_label="SEGMENTATION",
        content_description=f"{algorithm.get('name') or 'AI'} segmentation"[:64],
        series_description=f"{algorithm.get('name') or 'AI'} segmentation"[:64],
        **kwargs,
    )
    return seg, [(value, segment_of[value], info.get(value, {}).get("name") or f"label {value}") for value in present]


def write_image_series(volume: Path, sidecar_path: Path, sidecar: dict, payload: Path, output_dir: Path) -> Path:
    """A volume with the reader's sidecar (no AI in between: dicom-reader -> dicom-writer) back
    to DICOM: a derived series, one instance per slice, each a copy of its source instance's
    header with the volume's values (stored through the source's Rescale Slope/Intercept),
    new Series/SOP Instance UIDs, ImageType DERIVED\\SECONDARY and a Source Image Sequence."""
    import copy

    import numpy as np
    import SimpleITK as sitk
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sources = find_sources(sidecar_path, sidecar, payload)
    if len({id(ds) for ds in sources}) < len(sources):
        raise InputProblem(f"series {sidecar.get('series_instance_uid')} comes from a multi-frame object: "
                           "writing a volume back as images supports single-frame series only")
    voxels = sitk.GetArrayFromImage(sitk.ReadImage(str(volume)))
    if list(voxels.shape[::-1]) != sidecar.get("size"):
        raise InputProblem(f"{volume.name} is {'x'.join(map(str, voxels.shape[::-1]))} but its sidecar says "
                           f"{'x'.join(map(str, sidecar.get('size', [])))}")
    series_uid = generate_uid()
    target = output_dir / series_uid
    target.mkdir(parents=True, exist_ok=True)
    for k, source in enumerate(sources):
        ds = copy.deepcopy(source)
        slope, intercept = float(ds.get("RescaleSlope") or 1.0), float(ds.get("RescaleIntercept") or 0.0)
        bits, signed = int(ds.BitsStored), int(ds.get("PixelRepresentation") or 0) == 1
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        stored = np.clip(np.rint((voxels[k].astype(np.float64) - intercept) / slope), low, high)
        dtype = {8: "i1" if signed else "u1", 16: "<i2" if signed else "<u2", 32: "<i4" if signed else "<u4"}
        ds.PixelData = stored.astype(dtype[int(ds.BitsAllocated)]).tobytes()
        ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) == 8 else "OW"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.ImageType = ["DERIVED", "SECONDARY", *list(ds.get("ImageType") or [])[2:]]
        ds.SeriesDescription = f"{ds.get('SeriesDescription') or 'series'} (clara-wf)"[:64]
        ds.SeriesNumber = int(ds.get("SeriesNumber") or 0) + 1000
        ds.DerivationDescription = "volume written back to DICOM by clara-wf dicom-writer"
        reference = Dataset()
        reference.ReferencedSOPClassUID = source.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ds.SourceImageSequence = [reference]
        ds.save_as(target / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
    return target


def _position(sidecar, k):
    import numpy as np

    direction = np.asarray(sidecar["direction"]).reshape(3, 3)
    return list(np.asarray(sidecar["origin"]) + k * sidecar["spacing"][2] * direction[:, 2])


# --- the stage -----------------------------------------------------------------------------


def run(env=None):
    env = os.environ if env is None else env
    inputs, output_dir = folders(env)
    label_maps = find_label_maps(inputs)
    payload = payload_root(env, inputs[0])
    written = []
    if not label_maps:  # dicom-reader -> dicom-writer: the volumes go back as image series
        for folder in inputs:
            for volume in sorted(p for p in folder.rglob("*") if p.name.lower().endswith(VOLUME_SUFFIXES)):
                started = time.perf_counter()
                sidecar_path, sidecar = own_sidecar(volume)
                target = write_image_series(volume, sidecar_path, sidecar, payload, output_dir)
                log(f"{volume.name}: no label map, the image volume itself -> {target.name}/ "
                    f"({len(sidecar['instances'])} derived images) [{(time.perf_counter() - started) * 1000:.0f} ms]")
                written.append(target)
        return written
    found = []
    for label_map in label_maps:
        try:
            found.append((label_map, *find_sidecar(label_map, inputs, payload)))
        except InputProblem as exc:
            if len(label_maps) == 1:
                raise
            # Left by another workflow's run, or not from a DICOM series: no SEG can reference it.
            log(f"skipped {label_map.name}: {exc}")
    if not found:
        raise InputProblem(f"none of the {len(label_maps)} label maps has a dicom-reader sidecar in the payload "
                           f"{payload}: the writer needs the source series - run dicom-reader earlier in the workflow")
    for label_map, sidecar_path, sidecar in found:
        started = time.perf_counter()
        sources = find_sources(sidecar_path, sidecar, payload)
        seg, segments = build_seg(label_map, sidecar, sources, label_table(label_map))
        if seg is None:
            log(f"{label_map.name}: no label in the map, no Segmentation written")
            continue
        base = volume_name(label_map)
        target = output_dir / (base if base.endswith(SEG_TAG) else base + SEG_TAG)
        target = target.with_name(target.name + ".dcm")
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name("." + target.name + ".tmp")
        try:
            seg.save_as(tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise StageError(f"cannot write {target}: {exc}") from None
        names = ", ".join(f"{n}={name}" for _, n, name in segments)
        log(f"{label_map.name} + series {sidecar.get('series_instance_uid')} ({len(sources)} slices) -> {target.name} "
            f"[segments {names}; {(time.perf_counter() - started) * 1000:.0f} ms]")
        written.append(target)
    return written


def main():
    return run_stage(run, STAGE)


if __name__ == "__main__":
    sys.exit(main())
