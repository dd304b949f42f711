#!/usr/bin/env python3
"""Figures of the reference pipeline on the shipped data (a fresh copy of the project).

    python bench/reference_pipeline.py

Runs `clara-wf test` (local engine, CPU Triton) for `ct`, `ai` and recon-ai (21dd9b92…) on a copy of
charts/, apps/, tools/ and test-data/ (no outputs), and prints:
* each stage's run time (start to end of its program under the runner, from run.json);
* each workflow's wall time (the whole `clara-wf test`) - with a Triton already running on a
  free port (`--trtis-uri`; its start time is printed apart), or with `--auto-triton` the
  Triton that `clara-wf test` starts and stops itself (port 8000, contended on a shared machine);
* Dice per label of the SEGs read back with highdicom against the phantoms' ground truth;
* the reconstruction error of recon (HU, inside the body) against the noiseless phantom.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
JOB = "00000000-0000-0000-0000-000000000000"
RECON_AI = "21dd9b92-f307-4e68-ba31-fe8b1449ceea"  # the guide's recon-ai
sys.path.insert(0, str(ROOT / "tools"))
import make_phantom as mp  # noqa: E402


def fresh(root: Path) -> Path:
    for name in ("charts", "apps", "tools"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.whl"))
    shutil.copytree(ROOT / "test-data", root / "test-data",
                    ignore=shutil.ignore_patterns("output", "logs", "locks", "run.json", "runs"))
    return root


def run(project: Path, workflow: str, uri: Optional[str]) -> float:
    env = {**os.environ, "KUBECONFIG": str(project / "none")}
    started = time.perf_counter()
    extra = ["--trtis-uri", uri] if uri else []
    result = subprocess.run([sys.executable, "-m", "clara_wf", "test", workflow, *extra], cwd=project, env=env,
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{workflow} failed:\n{result.stderr[-2000:]}")
    return wall


def stage_times(project: Path) -> dict:
    record = json.loads((project / "test-data" / JOB / "run.json").read_text())
    parse = datetime.fromisoformat
    return {s["stage"]: (parse(s["end"]) - parse(s["start"])).total_seconds() for s in record["stages"]}


def seg_dice(project: Path, series: str, names: dict, truth: np.ndarray) -> dict:
    import highdicom as hd

    job = project / "test-data" / JOB
    seg = hd.seg.segread(job / "dicom-writer" / "output" / f"{series}.seg.dcm")
    side = json.loads((job / "dicom-reader" / "output" / f"{series}.json").read_text())
    numbers = seg.get_pixels_by_source_instance([i["sop_instance_uid"] for i in side["instances"]],
                                                combine_segments=True, relabel=False)
    out = {}
    for segment in seg.SegmentSequence:
        value = names[segment.SegmentLabel]
        out[segment.SegmentLabel] = round(mp.dice(numbers == segment.SegmentNumber, truth == value), 4)
    return out


def main() -> int:
    import socket

    from clara_wf.triton import local as triton_local

    auto = "--auto-triton" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as state:
        uri = None
        if not auto:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            started = time.perf_counter()
            instance = triton_local.start(Path(state), ROOT / "test-data" / "models", http_port=port, timeout=120)
            print(f"Triton (both models) ready in {time.perf_counter() - started:.2f} s at {instance.uri}")
            uri = instance.uri
        try:
            return figures(uri)
        finally:
            if not auto:
                triton_local.stop(Path(state))


def figures(uri: Optional[str]) -> int:
    import SimpleITK as sitk

    thorax = "2.25.225071297333823043614441041068709878453"
    abdomen = "2.25.213351516429536475070181760794286906020"
    with tempfile.TemporaryDirectory() as tmp:
        for workflow in ("ct", "ai", RECON_AI):
            project = fresh(Path(tmp) / workflow)
            wall = run(project, workflow, uri)
            times = ", ".join(f"{k} {v:.2f} s" for k, v in stage_times(project).items())
            how = "Triton started and stopped by the run" if uri is None else "Triton already up"
            print(f"{workflow}: wall {wall:.2f} s (clara-wf test, {how}); stages: {times}")
            if workflow == "ct":
                print(f"  Dice thorax SEG: {seg_dice(project, thorax, {'Soft tissue': 1, 'Lung': 2, 'Bone': 3}, mp.ground_truth())}")
            if workflow == "ai":
                print(f"  Dice abdomen SEG: {seg_dice(project, abdomen, {'Liver': 1, 'Liver tumor': 2}, mp.make_abdomen()[1])}")
            if workflow == RECON_AI:
                job = project / "test-data" / JOB
                hu = sitk.GetArrayFromImage(sitk.ReadImage(str(job / "recon" / "output" / "recon.mhd")))
                truth = mp.noiseless_hu()[mp.SINO_SLICES]
                body = truth > -500
                err = hu[body] - truth[body]
                print(f"  recon error vs noiseless phantom (HU, body): RMSE {np.sqrt(np.mean(err ** 2)):.1f}, "
                      f"mean |e| {np.mean(np.abs(err)):.1f}, median |e| {np.median(np.abs(err)):.1f}")
                labels = sitk.GetArrayFromImage(sitk.ReadImage(str(job / "ai-vnet" / "output" / "recon.seg.mhd")))
                report = {k: round(v, 4) for k, v in mp.dice_report(labels, mp.ground_truth()[mp.SINO_SLICES]).items()}
                print(f"  Dice ai-vnet on the reconstruction: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
