"""Helpers for the reference stage tests (dicom-reader, dicom-writer, recon): the apps as modules, pydicom's shipped files by path,
and a stage run as a separate process with the folders the chart gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

from helpers.triton import JOB, REPO, load_file

READER_DIR = REPO / "apps" / "dicom-reader"
WRITER_DIR = REPO / "apps" / "dicom-writer"
PHANTOM_SERIES = REPO / "test-data" / JOB / "dicom-reader" / "input" / "ct-phantom"


def reader_module():
    return load_file("dicom_reader_main", READER_DIR / "main.py")


def writer_module():
    return load_file("dicom_writer_main", WRITER_DIR / "main.py")


def pydicom_file(name: str) -> Path:
    """A file pydicom ships (read by path: get_testdata_file goes to the network for others)."""
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.is_file(), f"pydicom no longer ships {name}"
    return path


def folders_env(appdir: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NVIDIA_CLARA_", "DICOM_"))}
    env.update(NVIDIA_CLARA_APPDIR=str(appdir), NVIDIA_CLARA_INPUTS="input/input.mhd",
               NVIDIA_CLARA_OUTPUTS="output/output.mhd", NVIDIA_CLARA_NOSYNCLOCK="TRUE")
    env.update(extra)
    return env


def run_app(app_dir: Path, env: Dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python3 -u main.py` in the app folder, as the local engine starts it."""
    return subprocess.run([sys.executable, "-u", "main.py", *args], cwd=app_dir, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess, stage: str, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{stage}: error: "), result.stderr
    return lines[0]
