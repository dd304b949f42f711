"""`clara-wf test --engine container`: the workflow's pod run from the real stage images.

Needs podman (or a Docker engine); skipped with the reason elsewhere. Each test uses its
own job id, so the leftover checks (no container, no pod) see only what it made. The
stage image is built once per session through `--build`'s code and removed at the end.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from container_helpers import copy_buildable_project, leftovers, remove_job, set_stage_image
from helpers import JOB, REPO, assert_error_last_line, assert_one_line_error, run_cli
from helpers.workflows import add_workflow, python_stage

# Not marked `helm`: the rendering is the local engine's (tested under both Helm majors); running
# the images again under the other major would add a minute and an image build for nothing new.
pytestmark = [pytest.mark.container, pytest.mark.slow]
NO_CLUSTER = {"KUBECONFIG": "/nonexistent/kubeconfig"}


@pytest.fixture
def rt(container_rt):
    return container_rt


@pytest.fixture
def image(stage_image):
    return stage_image


def stage_project(tmp_path: Path, image: str, programs: dict, waits=None) -> Path:
    """A project whose stages run tiny Python programs under the runner of the stage image."""
    project = copy_buildable_project(tmp_path / "project")
    add_workflow(project, "wf", programs, waits=waits)
    repository, tag = image.split(":")
    for name in programs:
        set_stage_image(project, name, repository, tag)
    return project


def run_async(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clara_wf", "test", *args], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**__import__("os").environ, **NO_CLUSTER})


def stop(proc: subprocess.Popen, rt, job: str) -> None:
    """However a test ends: clara-wf stopped as a user would, then nothing of the job left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    remove_job(rt, job)


def running(rt, job: str) -> list:
    return rt.run("ps", "--quiet", "--filter", f"label=io.clara-wf.job={job}", "--filter", "status=running",
                  what="ps").stdout.split()


def wait_for_running(rt, job: str, count: int, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if len(running(rt, job)) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} containers of job {job} never ran")


def test_ai_only_end_to_end_in_containers_matches_the_ground_truth(rt, image, tmp_path):
    """The default workflow from its image, with `--build`, next to a real local Triton: Dice >= 0.9."""
    import SimpleITK as sitk
    from make_phantom import dice_report

    project = copy_buildable_project(tmp_path / "project")
    repository, tag = image.split(":")
    set_stage_image(project, "ai-vnet", repository, tag)
    job = str(uuid.uuid4())
    source = REPO / "test-data" / JOB / "ai-vnet" / "input"
    shutil.copytree(source, project / "test-data" / job / "ai-vnet" / "input")
    result = run_cli("test", "ai-only", job, "--engine", "container", "--build", cwd=project, env=NO_CLUSTER)
    assert result.returncode == 0, result.stderr
    assert f"--build: {image} built" in result.stderr
    assert "ai-vnet | ai-vnet: recon.mhd (128x128x64) -> /app/output/recon.seg.mhd" in result.stderr
    payload = project / "test-data" / job
    mask = sitk.ReadImage(str(payload / "ai-vnet" / "output" / "recon.seg.mhd"))
    assert dice_report(sitk.GetArrayFromImage(mask))["body"] >= 0.9
    record = json.loads((payload / "run.json").read_text())
    assert record["engine"] == "container" and not record["interrupted"]
    assert [(s["stage"], s["state"], s["exit_code"]) for s in record["stages"]] == [("ai-vnet", "done", 0)]
    assert record["trtis_uri"].startswith("127.0.0.1:")
    assert leftovers(rt, job) == []
    assert not (project / ".clara-wf" / "triton.json").exists()  # the Triton it started is stopped


def test_a_failing_stage_stops_the_next_at_once(rt, image, tmp_path):
    project = stage_project(tmp_path, image, {
        "breaks": python_stage("import sys; print('about to fail'); sys.exit(3)"),
        "after": python_stage("import time; time.sleep(120)"),
    })
    job = str(uuid.uuid4())
    (project / "test-data" / job / "breaks" / "input").mkdir(parents=True)
    started = time.monotonic()
    result = run_cli("test", "wf", job, "--engine", "container", cwd=project, env=NO_CLUSTER)
    elapsed = time.monotonic() - started
    assert_error_last_line(result, 1, "stage breaks failed")
    assert "breaks | about to fail" in result.stderr
    assert elapsed < 100  # `after` would sleep 120 s had it run
    record = json.loads((project / "test-data" / job / "run.json").read_text())
    states = {s["stage"]: (s["state"], s["status"], s["exit_code"]) for s in record["stages"]}
    assert states["breaks"] == ("failed", "failed", 3)
    assert states["after"][:2] == ("failed", "upstream-failed")
    assert leftovers(rt, job) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_ctrl_c_or_sigterm_leaves_no_container_or_pod(rt, image, tmp_path, sig, code):
    project = stage_project(tmp_path, image, {
        "one": python_stage("import time; time.sleep(120)"),
        "two": python_stage("import time; time.sleep(120)"),
    }, waits=["", ""])
    job = str(uuid.uuid4())
    (project / "test-data" / job / "one" / "input").mkdir(parents=True)
    proc = run_async(project, "wf", job, "--engine", "container")
    try:
        wait_for_running(rt, job, 2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc, rt, job)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == "clara-wf: interrupted"
    assert leftovers(rt, job) == []
    record = json.loads((project / "test-data" / job / "run.json").read_text())
    assert record["interrupted"] is True and {s["state"] for s in record["stages"]} == {"stopped"}


def test_kill_9_leaves_no_container_or_pod(rt, image, tmp_path):
    """clara-wf killed with SIGKILL cannot clean up: its watchdog (which outlives it) removes the pod."""
    project = stage_project(tmp_path, image, {"one": python_stage("import time; time.sleep(120)")})
    job = str(uuid.uuid4())
    (project / "test-data" / job / "one" / "input").mkdir(parents=True)
    proc = run_async(project, "wf", job, "--engine", "container")
    try:
        wait_for_running(rt, job, 1)
        proc.kill()
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 60
        while leftovers(rt, job) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert leftovers(rt, job) == []  # long before the 120 s sleep would have ended
    finally:
        stop(proc, rt, job)


def test_the_next_run_sweeps_what_a_dead_clara_wf_left(rt, image):
    """Should the watchdog die too, the next container run removes containers whose clara-wf is gone."""
    from clara_wf.containers import pod as pods

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    job, name = str(uuid.uuid4()), f"clara-wf-sweep-{uuid.uuid4().hex[:6]}"
    try:
        rt.run("run", "--detach", "--name", name, "--label", f"io.clara-wf.run={name}",
               "--label", f"io.clara-wf.job={job}", "--label", f"io.clara-wf.pid={gone.pid}",
               image, "python3", "-c", "import time; time.sleep(60)", what="run")
        kept = rt.run("run", "--detach", "--label", f"io.clara-wf.job={job}", "--label", f"io.clara-wf.pid={gone.pid}",
                      "--label", "io.clara-wf.keep=true", image, "true", what="run").stdout.strip()
        assert name in pods.sweep_orphans(rt)
        assert leftovers(rt, job) == [kept[:12]]  # --keep runs are the user's
    finally:
        remove_job(rt, job)


def test_keep_keeps_the_pod_and_its_containers(rt, image, tmp_path):
    project = stage_project(tmp_path, image, {"only": python_stage("print('hello from the image')")})
    job = str(uuid.uuid4())
    (project / "test-data" / job / "only" / "input").mkdir(parents=True)
    try:
        result = run_cli("test", "wf", job, "--engine", "container", "--keep", cwd=project, env=NO_CLUSTER)
        assert result.returncode == 0, result.stderr
        assert "only | hello from the image" in result.stderr
        assert "kept pod clara-wf-" in result.stderr
        assert len(leftovers(rt, job)) == (3 if rt.is_podman else 1)  # the stage (+ the pod and its infra)
    finally:
        remove_job(rt, job)
    assert leftovers(rt, job) == []


def test_a_missing_image_is_one_line_naming_it_and_the_build_command(rt, tmp_path):
    project = copy_buildable_project(tmp_path / "project")
    set_stage_image(project, "ai-vnet", "clara-wf-test-never-built", "x")
    (project / "test-data" / JOB / "ai-vnet" / "input").mkdir(parents=True)
    result = run_cli("test", "--engine", "container", cwd=project, env=NO_CLUSTER)
    assert_error_last_line(result, 2, "stage 'ai-vnet': image clara-wf-test-never-built:x is not in",
                           "clara-wf test --engine container --build",
                           f"build -t clara-wf-test-never-built:x -f {project}/apps/ai-vnet/Dockerfile {project}")
    assert not (project / "test-data" / JOB / "run.json").exists()


def test_an_unknown_runtime_is_refused_before_anything_runs(tmp_path):
    project = copy_buildable_project(tmp_path / "project")
    (project / "test-data" / JOB / "ai-vnet" / "input").mkdir(parents=True)
    result = run_cli("test", "--engine", "container", "--runtime", "lxc", cwd=project, env=NO_CLUSTER)
    assert_one_line_error(result, 2, "unknown container runtime 'lxc': choose one of auto, podman, docker")
