"""Helpers for the Triton, phantom and ai-vnet tests: load the tool/model/app files, run a
real local Triton for a module, and run the real ai-vnet main.py as a separate process."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
JOB = "00000000-0000-0000-0000-000000000000"
MODELS = REPO / "test-data" / "models"
MODEL_NAME = "segmentation_ct_v1"
APP_DIR = REPO / "apps" / "ai-vnet"
PHANTOM_INPUT = REPO / "test-data" / JOB / "ai-vnet" / "input"


def load_file(name: str, path: Path):
    """Import a file that is not in a package (tools/, apps/, the model repository)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def phantom_module():
    return load_file("make_phantom", REPO / "tools" / "make_phantom.py")


def model_module():
    return load_file("segmentation_ct_v1_model", MODELS / MODEL_NAME / "1" / "model.py")


def app_module():
    return load_file("ai_vnet_main", APP_DIR / "main.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def triton_server(state_dir: Path, model_repository: Path = MODELS) -> Iterator:
    """Body of a module-scoped fixture: a real local Triton, always stopped afterwards."""
    from clara_wf.errors import ExternalToolError
    from clara_wf.triton import local as triton_local

    try:
        triton_local.find_distribution()
    except ExternalToolError as exc:
        pytest.skip(f"no local Triton: {exc}")
    try:
        # A free port, not 8000: on a shared machine another Triton may take 8000 between our
        # check and our bind, and its readiness would then pass for ours.
        instance = triton_local.start(state_dir, model_repository, http_port=free_port(), timeout=120)
        yield instance
    finally:
        triton_local.stop(state_dir)


def stage_env(appdir: Path, uri: str, **extra: str) -> Dict[str, str]:
    """The environment the local engine gives the stage (host folders), nothing inherited from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NVIDIA_CLARA_", "TRITON_"))}
    env.update(
        NVIDIA_CLARA_APPDIR=str(appdir),
        NVIDIA_CLARA_INPUTS="input/recon.mhd",
        NVIDIA_CLARA_OUTPUTS="output/recon.seg.mhd",
        NVIDIA_CLARA_TRTISURI=uri,
        NVIDIA_CLARA_NOSYNCLOCK="TRUE",
    )
    env.update(extra)
    return env


def run_stage(env: Dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`python3 -u main.py` in the app folder, as the local engine starts it."""
    return subprocess.run(
        [sys.executable, "-u", "main.py"], cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )


def read_image(path: Path):
    import SimpleITK as sitk

    return sitk.ReadImage(str(path))


def geometry(image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def write_volume(path: Path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction: Optional[tuple] = None):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image
