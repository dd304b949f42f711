#!/usr/bin/env python3
"""Look at a DICOM Segmentation: a PNG of a middle slice of its source CT with the segments over it.

    python tools/seg_overlay.py                       # every SEG of the default job's dicom-writer/output
    python tools/seg_overlay.py --job-dir test-data/<job> [--out-dir DIR]

For each ``*.seg.dcm`` in ``<job>/dicom-writer/output`` it reads the SEG with highdicom, the
source volume and slice order from dicom-reader's output (``<series>.mhd`` + sidecar), takes
the middle slice of those the SEG covers, and writes ``<out-dir>/<series>.png`` (default
``<job>/demo/output``): the CT in a soft-tissue window (W 400 / L 40) with each segment in
its colour, and a legend of the segment labels. Prints the SEG and the PNG it wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = "00000000-0000-0000-0000-000000000000"
COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def overlay(seg_path: Path, reader_out: Path, out_dir: Path) -> Path:
    import highdicom as hd
    import numpy as np
    import SimpleITK as sitk
    from PIL import Image, ImageDraw

    seg = hd.seg.segread(seg_path)
    series = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    sidecar = reader_out / f"{series}.json"
    if not sidecar.is_file():
        raise SystemExit(f"seg_overlay: no dicom-reader output for series {series} in {reader_out}")
    data = json.loads(sidecar.read_text())
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(reader_out / data["volume"])))
    uids = [i["sop_instance_uid"] for i in data["instances"]]
    labels = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False,
                                               assert_missing_frames_are_empty=True)
    covered = np.flatnonzero(labels.reshape(len(uids), -1).any(axis=1))
    k = int(covered[len(covered) // 2]) if covered.size else len(uids) // 2
    grey = np.clip((ct[k].astype(np.float32) - (40 - 200)) / 400.0 * 255.0, 0, 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1).astype(np.float32)
    for segment in seg.SegmentSequence:
        mask = labels[k] == segment.SegmentNumber
        colour = np.array(COLOURS[(segment.SegmentNumber - 1) % len(COLOURS)], dtype=np.float32)
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
    scale = 4
    image = Image.fromarray(rgb.astype(np.uint8)).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), f"{data.get('series_description') or series} - slice {k + 1}/{len(uids)}", fill=(255, 255, 255))
    for row, segment in enumerate(seg.SegmentSequence):
        colour = COLOURS[(segment.SegmentNumber - 1) % len(COLOURS)]
        y = 28 + 16 * row
        draw.rectangle((8, y, 20, y + 10), fill=colour)
        draw.text((26, y - 1), f"{segment.SegmentNumber} {segment.SegmentLabel}", fill=(255, 255, 255))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{series}.png"
    image.save(target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-dir", type=Path, default=ROOT / "test-data" / JOB)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    segs = sorted((args.job_dir / "dicom-writer" / "output").glob("*.seg.dcm"))
    if not segs:
        print(f"seg_overlay: no DICOM Segmentation in {args.job_dir / 'dicom-writer' / 'output'}", file=sys.stderr)
        return 2
    out_dir = args.out_dir or args.job_dir / "demo" / "output"
    for seg in segs:
        png = overlay(seg, args.job_dir / "dicom-reader" / "output", out_dir)
        print(f"DICOM SEG: {seg}\n  overlay: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
