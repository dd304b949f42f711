#!/usr/bin/env python3
"""Figures of the local Triton and the reference stage (a benchmark, not a timed test).

    python bench/triton_figures.py [--starts 3] [--requests 20] [--large]

Measures, on this machine, with the tritonserver bundled by nvidia-pytriton:
* start-to-ready time of clara_wf.triton_local.start (and stop time);
* round-trip time of one segmentation_ct_v1 request for the phantom (128x128x64) and
  for a 64^3 float32 volume (client-side, HTTP, binary tensors);
* Dice of the produced labels against the phantom's ground truth;
* with --large, one 512x512x192 float32 request (the phantom at full CT resolution, 201 MB).
Everything runs in a temporary state folder; the servers are always stopped.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clara_wf.triton import local as triton_local  # noqa: E402

MODELS = ROOT / "test-data" / "models"
MODEL = "segmentation_ct_v1"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ms(values):
    return f"median {statistics.median(values) * 1000:.1f} ms (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--large", action="store_true")
    args = parser.parse_args()

    import numpy as np
    import tritonclient.http as httpclient

    phantom = _load("make_phantom", ROOT / "tools" / "make_phantom.py")
    hu, truth = phantom.make_phantom()

    with tempfile.TemporaryDirectory(prefix="clara-wf-bench-") as tmp:
        state = Path(tmp)
        starts, stops = [], []
        for _ in range(args.starts - 1):
            t0 = time.perf_counter()
            triton_local.start(state, MODELS)
            starts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            triton_local.stop(state)
            stops.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        instance = triton_local.start(state, MODELS)
        starts.append(time.perf_counter() - t0)
        try:
            client = httpclient.InferenceServerClient(instance.uri, network_timeout=600)

            def infer(volume):
                tensor = httpclient.InferInput("INPUT__0", list(volume.shape), "FP32")
                tensor.set_data_from_numpy(volume, binary_data=True)
                wanted = httpclient.InferRequestedOutput("OUTPUT__0", binary_data=True)
                t = time.perf_counter()
                labels = client.infer(MODEL, [tensor], outputs=[wanted]).as_numpy("OUTPUT__0")
                return labels, time.perf_counter() - t

            volume = hu.astype(np.float32)
            first_labels, first = infer(volume)
            times = [infer(volume)[1] for _ in range(args.requests)]
            cube = np.ascontiguousarray(volume[:, 32:96, 32:96])  # 64^3 of the phantom
            infer(cube)
            cube_times = [infer(cube)[1] for _ in range(args.requests)]
            algo = _load("model", MODELS / MODEL / "1" / "model.py")
            algo_times = []
            for _ in range(5):
                t = time.perf_counter()
                algo.segment(volume)
                algo_times.append(time.perf_counter() - t)
            large = None
            if args.large:
                # The phantom at full CT resolution (512x512 in-plane, 192 slices). Not random
                # data: noise is a maze for the slice hole filling (about 15x slower).
                big = np.repeat(np.repeat(np.repeat(volume, 4, 1), 4, 2), 3, 0)
                large = infer(big)[1]
        finally:
            t0 = time.perf_counter()
            triton_local.stop(state)
            stops.append(time.perf_counter() - t0)

    print(f"tritonserver start-to-ready: {_ms(starts)}")
    print(f"tritonserver stop:           {_ms(stops)}")
    print(f"phantom 128x128x64 request:  first {first * 1000:.1f} ms, then {_ms(times)}")
    print(f"  of which the algorithm:    {_ms(algo_times)} (in-process, no Triton)")
    print(f"64^3 float32 request:        {_ms(cube_times)} (a 64^3 block of the phantom)")
    if large is not None:
        print(f"512x512x192 float32 request: {large:.2f} s")
    report = phantom.dice_report(first_labels, truth)
    print("Dice vs ground truth:        " + ", ".join(f"{k} {v:.4f}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
