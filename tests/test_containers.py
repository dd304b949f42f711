"""Containers: the runtime choice, the pod spec mapped to `run` arguments, the wheel cache,
the local Debian base image and the ai-vnet image (built for real with podman where it works)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from container_helpers import copy_buildable_project
from helpers import JOB, REPO

from clara_wf.containers import base_image, build, pod, runtime
from clara_wf.errors import ExternalToolError, InputError

POD_SPEC = {
    "containers": [{
        "name": "seg",
        "image": "seg:1",
        "command": ["python3", "-m", "clara_wf.runner", "--"],
        "args": ["python3", "-u", "main.py"],
        "env": [{"name": "NVIDIA_CLARA_APPDIR", "value": "/app"}, {"name": "EMPTY"}],
        "workingDir": "/work",
        "volumeMounts": [
            {"name": "payload", "mountPath": "/app/input", "subPath": "seg/input"},
            {"name": "payload", "mountPath": "/app/locks", "subPath": "locks", "readOnly": False},
            {"name": "payload", "mountPath": "/payloads"},
            {"name": "payload", "mountPath": "/models", "subPath": "models", "readOnly": True},
        ],
    }],
    "volumes": [{"name": "payload", "persistentVolumeClaim": {"claimName": "c"}}],
}


# --------------------------------------------------------------------------- no runtime needed


def test_pod_spec_maps_onto_run_arguments_as_kubernetes_runs_it(tmp_path):
    """command overrides the image's entrypoint, args follow it; subPath → a payload folder."""
    (spec,) = pod.container_specs(POD_SPEC, tmp_path)
    assert spec.entrypoint == "python3"
    assert spec.args == ("-m", "clara_wf.runner", "--", "python3", "-u", "main.py")
    podman = pod.Pod(runtime.Runtime("podman", "/usr/bin/podman"), JOB, name="p1")
    argv = podman.run_argv(spec)
    assert argv[:2] == ["run", "--name"] and argv[2] == "p1-seg"
    assert ["--pod", "p1"] == argv[argv.index("--pod"):argv.index("--pod") + 2]
    assert ["--pull", "never"] == argv[argv.index("--pull"):argv.index("--pull") + 2]
    assert "NVIDIA_CLARA_APPDIR=/app" in argv and "EMPTY=" in argv
    volumes = [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]
    assert volumes == [f"{tmp_path}/seg/input:/app/input", f"{tmp_path}/locks:/app/locks",
                       f"{tmp_path}:/payloads", f"{tmp_path}/models:/models:ro"]
    assert argv[argv.index("--workdir") + 1] == "/work"
    assert argv[-7:] == ["seg:1", "-m", "clara_wf.runner", "--", "python3", "-u", "main.py"]
    assert argv[argv.index("--entrypoint") + 1] == "python3"
    assert f"io.clara-wf.job={JOB}" in argv


def test_docker_shares_the_host_network_instead_of_a_pod(tmp_path):
    (spec,) = pod.container_specs(POD_SPEC, tmp_path)
    argv = pod.Pod(runtime.Runtime("docker", "/usr/bin/docker"), JOB, name="p2").run_argv(spec)
    assert "--pod" not in argv
    assert argv[argv.index("--network") + 1] == "host"


def test_args_alone_keep_the_images_entrypoint(tmp_path):
    spec_doc = {"containers": [{"name": "a", "image": "a:1", "args": ["x", "y"]}], "volumes": []}
    (spec,) = pod.container_specs(spec_doc, tmp_path)
    assert spec.entrypoint is None and spec.args == ("x", "y")
    argv = pod.Pod(runtime.Runtime("podman", "podman"), JOB, name="p").run_argv(spec)
    assert "--entrypoint" not in argv and argv[-3:] == ["a:1", "x", "y"]


def test_a_volume_other_than_the_payload_is_refused(tmp_path):
    doc = {"containers": [{"name": "a", "image": "a", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
           "volumes": [{"name": "cfg", "configMap": {"name": "x"}}]}
    with pytest.raises(InputError, match="volume 'cfg' is not the payload claim"):
        pod.container_specs(doc, tmp_path)


def test_a_colon_in_a_mounted_path_is_one_clear_error(tmp_path):
    (spec,) = pod.container_specs(POD_SPEC, tmp_path / "a:b")
    with pytest.raises(InputError, match="has a ':'"):
        pod.Pod(runtime.Runtime("podman", "podman"), JOB).run_argv(spec)


def test_podman_gets_the_projects_containers_conf_unless_the_user_set_one(monkeypatch):
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/sbin/runc" if name == "runc" else None)
    assert runtime.runtime_env("podman")["CONTAINERS_CONF"] == str(runtime.CONTAINERS_CONF)
    assert "CONTAINERS_CONF" not in runtime.runtime_env("docker")
    monkeypatch.setenv("CONTAINERS_CONF", "/mine.conf")
    assert runtime.runtime_env("podman")["CONTAINERS_CONF"] == "/mine.conf"
    conf = runtime.CONTAINERS_CONF.read_text()
    assert 'runtime = "runc"' in conf and '"nofile=1024:1024"' in conf and '"nproc=1024:1024"' in conf


def test_unknown_or_missing_runtime_is_one_clear_error(monkeypatch):
    with pytest.raises(InputError, match="unknown container runtime 'lxc'"):
        runtime.find_runtime("lxc")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    with pytest.raises(ExternalToolError, match="no container runtime works here: podman is not installed; "
                                                "docker is not installed; install podman"):
        runtime.find_runtime("auto")


def test_a_docker_client_without_an_engine_does_not_count(monkeypatch, tmp_path):
    """This machine has a docker CLI but no engine: auto must not pick it."""
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: str(fake) if name == "docker" else None)
    with pytest.raises(ExternalToolError, match="docker does not answer .*Cannot connect to the Docker daemon"):
        runtime.find_runtime("docker")


def test_base_image_key_is_content_keyed():
    spec = base_image.recipe()
    assert base_image.key(spec) == base_image.key(dict(reversed(list(spec.items()))))
    assert base_image.key(spec) != base_image.key(base_image.recipe(packages=(*base_image.PACKAGES, "curl")))
    assert base_image.key(spec) != base_image.key(base_image.recipe(suite="trixie"))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLARA_WF_CACHE", str(tmp_path / "c"))
    assert base_image.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CLARA_WF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert base_image.cache_dir() == tmp_path / "x" / "clara-wf"


def test_wheels_are_placed_from_the_cache_and_stale_ones_removed(tmp_path):
    cached, target = tmp_path / "cache", tmp_path / "wheels"
    cached.mkdir()
    target.mkdir()
    for name in ("a-1-py3-none-any.whl", "b-2-py3-none-any.whl"):
        (cached / name).write_text(name)
    (cached / build.WHEELS_STAMP).write_text('{"k": 1}\n')
    (target / "old-0-py3-none-any.whl").write_text("stale")
    (target / build.WHEELS_STAMP).write_text('{"k": 0}\n')
    assert build.place_wheels(cached, target) == 2
    assert sorted(p.name for p in target.glob("*.whl")) == ["a-1-py3-none-any.whl", "b-2-py3-none-any.whl"]
    assert (target / build.WHEELS_STAMP).read_text() == '{"k": 1}\n'
    assert build.place_wheels(cached, target) == 2  # nothing to do the second time


def test_wheels_put_there_by_hand_are_left_alone(tmp_path):
    (tmp_path / "mine-1-py3-none-any.whl").write_text("x")
    assert build._hand_placed(tmp_path)
    (tmp_path / build.WHEELS_STAMP).write_text("{}")
    assert not build._hand_placed(tmp_path)


def test_stage_builds_come_from_the_values_and_are_checked(tmp_path):
    from clara_wf.project import find_project
    from clara_wf.workflow import plan_run

    project = copy_buildable_project(tmp_path / "p")
    (project / "test-data" / JOB).mkdir(parents=True)
    run = plan_run(find_project(start=project), "ai-only", JOB)
    (only,) = build.stage_builds(run)
    assert only.stage == "ai-vnet" and only.image == "ai-vnet:latest"
    assert only.context == project and only.dockerfile == project / "apps" / "ai-vnet" / "Dockerfile"
    assert only.wheels == project / "apps" / "ai-vnet" / "wheels"
    assert only.command("podman") == f"podman build -t ai-vnet:latest -f {only.dockerfile} {project}"
    (project / "apps" / "ai-vnet" / "Dockerfile").unlink()
    with pytest.raises(InputError, match=r"stage 'ai-vnet': Dockerfile .* is missing \(stages.ai-vnet.build.dockerfile\)"):
        build.stage_builds(run)


def test_the_dockerfile_takes_its_base_as_a_build_argument_and_installs_offline_from_wheels():
    text = (REPO / "apps" / "ai-vnet" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}" in text
    assert "pip install --no-index --find-links /tmp/deps -r /tmp/deps/requirements.txt" in text
    assert build.dockerfile_python(REPO / "apps" / "ai-vnet" / "Dockerfile") == "3.11"
    ignore = (REPO / "apps" / "ai-vnet" / "Dockerfile.dockerignore").read_text()
    assert "!apps/ai-vnet/wheels/" in ignore


# --------------------------------------------------------------------------- real podman/docker


@pytest.mark.container
@pytest.mark.slow
def test_the_base_image_is_built_once_and_reused(container_rt):
    first = base_image.ensure(container_rt)
    again = base_image.ensure(container_rt)
    assert again.ref == first.ref and not again.built
    assert again.python == "3.11"  # Debian bookworm: the wheels are fetched for it
    assert again.seconds < 5


@pytest.mark.container
@pytest.mark.slow
def test_the_images_runner_and_payload_module_work_under_the_images_python(container_rt, stage_image):
    """The runner and clara_payload the image carries, under its own Python (standard library only)."""
    program = ("import sys, clara_wf.payload as p; e = p.clara_payload.input_entries[0]; "
               "print(sys.version_info[:2], sys.executable, e.name, e.path)")
    env = {"NVIDIA_CLARA_NOSYNCLOCK": "TRUE", "NVIDIA_CLARA_INPUTPATHS": "payload:/input",
           "NVIDIA_CLARA_OUTPUTPATHS": "seg/out:/output"}
    argv = ["run", "--rm", "--network", "none"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    result = container_rt.run(*argv, stage_image, "python3", "-m", "clara_wf.runner", "--", "python3", "-c", program,
                              what="runner in the image")
    assert "(3, 11) /opt/venv/bin/python3 payload /input" in result.stdout, (result.stdout, result.stderr)
    imports = container_rt.run("run", "--rm", "--network", "none", stage_image, "python3", "-c",
                               "import numpy, SimpleITK, tritonclient.http; print(numpy.__version__)",
                               what="stage libraries in the image")
    assert imports.stdout.strip().startswith("1."), imports.stdout  # numpy<2, as on the host side


@pytest.mark.container
@pytest.mark.slow
def test_the_image_is_built_on_the_local_base_with_the_deps_in_a_venv(container_rt, stage_image):
    def layers(ref):
        out = container_rt.run("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref, what="inspect").stdout
        return json.loads(out)

    base = base_image.ensure(container_rt)
    assert layers(stage_image)[:len(layers(base.ref))] == layers(base.ref)
    env = container_rt.run("image", "inspect", "--format", "{{json .Config.Env}}", stage_image, what="inspect").stdout
    assert any(e.startswith("PATH=/opt/venv/bin:") for e in json.loads(env))


def test_missing_mmdebstrap_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr(base_image.shutil, "which", lambda name: None)
    with pytest.raises(ExternalToolError, match="mmdebstrap is not installed.*--base-image"):
        base_image.debootstrap(base_image.recipe(), tmp_path / "x.tar", lambda _m: None)


def test_tools_base_image_reports_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "tools" / "base_image.py"), "--runtime", "lxc"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "base_image: error: unknown container runtime 'lxc': choose one of auto, podman, docker"


def test_ps_json_is_read_in_podmans_and_dockers_forms():
    """podman 4.3 prints one JSON array with label maps; docker one object a line with "k=v,k=v"."""
    podman_out = json.dumps([{"Id": "a1", "Labels": {"io.clara-wf.pid": "12"}}], indent=2)
    docker_out = '{"ID": "b2", "Labels": "io.clara-wf.pid=34,io.clara-wf.run=r"}\n{"ID": "c3", "Labels": ""}\n'
    assert [pod._labels(e) for e in pod._json_entries(podman_out)] == [{"io.clara-wf.pid": "12"}]
    entries = pod._json_entries(docker_out)
    assert [e["ID"] for e in entries] == ["b2", "c3"]
    assert pod._labels(entries[0]) == {"io.clara-wf.pid": "34", "io.clara-wf.run": "r"}
    assert pod._labels(entries[1]) == {}
    assert pod._json_entries("") == [] and pod._json_entries("Error: no such thing") == []


def test_runs_are_labelled_with_their_clara_wf_pid_and_keep():
    import os

    kept = pod.Pod(runtime.Runtime("podman", "podman"), JOB, name="p", keep=True).labels()
    assert f"io.clara-wf.pid={os.getpid()}" in kept and "io.clara-wf.keep=true" in kept
    assert "io.clara-wf.keep=true" not in pod.Pod(runtime.Runtime("podman", "podman"), JOB, name="p").labels()
