"""Ctrl-C or SIGTERM at any moment of `clara-wf test` leaves no Triton that the run started:
not while it starts, not while the stages run, not while it is being stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from helpers import JOB, REPO
from helpers.workflows import add_workflow, python_stage

pytestmark = [pytest.mark.helm, pytest.mark.slow]


def _have_triton() -> bool:
    try:
        from clara_wf.triton import local as triton_local

        triton_local.find_distribution()
        return True
    except Exception:  # noqa: BLE001 - any reason means: no Triton here
        return False


def tritons_of(state_dir: Path) -> List[int]:
    """Live tritonserver processes started in this project's state folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "tritonserver":
                continue
            if os.readlink(entry / "cwd").startswith(str(state_dir)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _start(project: Path) -> subprocess.Popen:
    env = {**os.environ, "KUBECONFIG": "/nonexistent"}
    env.pop("CLARA_WF_CHART_DIR", None)
    return subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "trt", JOB, "--engine", "local",
                             "--sandbox", "none"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def signal_moments(total: float, count: int) -> List[float]:
    """``count`` moments over a run of ``total`` seconds, the last ones inside Triton's stop."""
    return [round(total * (i + 0.5) / count, 3) for i in range(count)] + [total * 0.97, total * 0.99]


@pytest.mark.skipif(not _have_triton(), reason="no tritonserver (nvidia-pytriton, `make setup`)")
def test_a_signal_at_any_moment_leaves_no_triton_running(project):
    import shutil

    import yaml

    shutil.copytree(REPO / "test-data" / "models", project / "test-data" / "models")
    add_workflow(project, "trt", {"infer": python_stage("import time; time.sleep(0.3); print('done')")})
    values = project / "charts/clara-workflow/values.yaml"
    text = values.read_text()
    assert yaml.safe_load(text)["stages"]["infer"]["services"] == []
    values.write_text(_set_services(text))
    (project / "test-data" / JOB / "infer" / "input").mkdir(parents=True)
    state = project / ".clara-wf"

    started = time.monotonic()
    clean = _start(project)
    _, err = clean.communicate(timeout=180)
    total = time.monotonic() - started
    assert clean.returncode == 0, err
    assert tritons_of(state) == []

    count = int(os.environ.get("CLARA_WF_SIGNAL_MOMENTS", "4"))  # more by hand: the report ran 30
    for i, moment in enumerate(signal_moments(total, count)):
        proc = _start(project)
        time.sleep(moment)
        proc.send_signal(signal.SIGINT if i % 2 == 0 else signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
        assert "Traceback" not in err, err
        left = tritons_of(state)
        for pid in left:  # do not leave them to the next test
            os.kill(pid, signal.SIGKILL)
        assert left == [], (moment, proc.returncode, err)
        assert not (state / "triton.json").exists(), moment


def _set_services(text: str) -> str:
    lines = text.splitlines(keepends=True)
    begin = lines.index("  ##BEGIN_infer##\n")
    at = next(i for i in range(begin, len(lines)) if lines[i].strip().startswith("services:"))
    lines[at] = lines[at].replace("[]", '["trtis"]')
    return "".join(lines)
