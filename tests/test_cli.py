"""The command line as a user meets it: the command list, help, errors, `test --dry-run`."""

from __future__ import annotations

import shlex

import pytest
import yaml
from helpers import JOB, REPO, assert_one_line_error, run_cli, tree_digest

COMMANDS = {
    "list_stages": ["list", "ls"],
    "create_stage": ["create", "cs"],
    "delete_stage": ["delete", "ds"],
    "test_workflow": ["test"],
    "install_trtis": [],
    "uninstall_trtis": [],
    "set_ngc_api_key": ["setkey"],
}


def test_no_arguments_prints_the_command_list_like_the_original(project):
    result = run_cli(cwd=project)
    assert result.returncode == 0
    out = result.stdout
    assert out.startswith("clara-wf [command] [arguments...]\n\nCommand List\n")
    assert "list_stages | list | ls" in out
    assert "create_stage | create | cs [stage name]" in out
    assert "test_workflow | test [workflow id] [job id]" in out
    assert f"default args: ai-only {JOB}" in out
    assert "set_ngc_api_key | setkey" in out
    original = [  # the original's lines, exactly (the list is generated from the registered commands)
        "    list_stages | list | ls                       : List available stages",
        "    create_stage | create | cs [stage name]       : Create stage",
        "    delete_stage | delete | ds [stage name]       : Delete stage",
        "    test_workflow | test [workflow id] [job id]   : Test workflow",
        f"                  default args: ai-only {JOB}",
        "    install_trtis                                 : Deploy TRTIS service",
        "    uninstall_trtis                               : Delete TRTIS service",
        "    set_ngc_api_key | setkey                      : Reset NGC API key",
    ]
    lines = out.splitlines()
    assert all(line in lines for line in original), out
    assert [line for line in lines if line in original] == original  # in the original's order


def test_choices_are_listed_in_help(project):
    out = run_cli("test", "--help", cwd=project, env={"COLUMNS": "200"}).stdout
    assert "[auto|local|kubernetes" in out and "[auto|bwrap|none]" in out and "[text|json]" in out


@pytest.mark.parametrize("name", [n for command, aliases in COMMANDS.items() for n in (command, *aliases)])
def test_every_command_and_alias_has_help(project, name):
    result = run_cli(name, "--help", cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"Usage: clara-wf {name}" in result.stdout


def test_outside_a_project_the_error_says_how_to_point_at_one(tmp_path):
    before = tree_digest(tmp_path)
    assert_one_line_error(run_cli("ls", cwd=tmp_path), 2, "charts/clara-workflow/Chart.yaml", "--chart-dir")
    assert_one_line_error(run_cli("--chart-dir", str(tmp_path), "ls", cwd=tmp_path), 2, "is not a Helm chart")
    assert tree_digest(tmp_path) == before


def test_unknown_command_and_option_are_usage_errors(project):
    assert_one_line_error(run_cli("frobnicate", cwd=project), 2, "No such command")
    assert_one_line_error(run_cli("ls", "--bogus", cwd=project), 2, "--bogus")
    assert_one_line_error(run_cli("ls", "--output", "xml", cwd=project), 2, "'xml' is not one of 'text', 'json'")


@pytest.mark.helm
def test_dry_run_prints_the_exact_helm_install_and_the_manifests(project):
    result = run_cli("test", "--dry-run", cwd=project)
    assert result.returncode == 0, result.stderr
    first, rest = result.stdout.split("\n", 1)
    argv = shlex.split(first.lstrip("# "))
    assert argv[1:4] == ["install", "test-wf", str(project / "charts" / "clara-workflow")]
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--set-string"]
    assert pairs == [
        "runSimple=TRUE",
        "workflow.id=ai-only",
        f"workflow.payloads.hostPath={str(project / 'test-data').replace('.', chr(92) + '.')}",
        f"job.id={JOB}",
        "job.name=Test Job",
        "trtisUri=trtis\\.default:8000",  # ai-vnet needs Triton: the Kubernetes engine installs trtis
        "dicomAdapter.input=",
        "dicomAdapter.output=",
    ]
    assert "--wait" in first
    assert argv[argv.index("--timeout") + 1] == "1800s"
    assert "kind: Job" in rest and "kind: PersistentVolume" in rest
    assert f"path: \"{project / 'test-data' / JOB}\"" in rest


@pytest.mark.helm
def test_dry_run_line_carries_the_kube_context_timeout_and_given_triton(project):
    result = run_cli("test", "--dry-run", "--kube-context", "gpu-lab", "--timeout", "60",
                     "--trtis-uri", "10.0.0.5:8000", cwd=project)
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout.split("\n", 1)[0].lstrip("# "))
    assert argv[argv.index("--kube-context") + 1] == "gpu-lab"
    assert argv[argv.index("--timeout") + 1] == "60s"
    assert "trtisUri=10\\.0\\.0\\.5:8000" in argv  # dots escaped for --set-string


@pytest.mark.helm
def test_dry_run_of_a_project_in_an_awkward_folder(tmp_path):
    """Commas, braces and spaces in the project path survive the trip through --set-string."""
    from helpers import copy_project

    project = copy_project(tmp_path / "with,comma {braces} and space")
    result = run_cli("test", "--dry-run", cwd=project)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout.split("MANIFEST:")[-1].split("NOTES:")[0]) if d]
    (pv,) = [d for d in docs if d["kind"] == "PersistentVolume"]
    assert pv["spec"]["hostPath"]["path"] == str(project / "test-data" / JOB)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["test", "ai-only", "not-a-uuid"], "job id 'not-a-uuid' is not a UUID"),
        (["test", "nope"], "no workflow 'nope'"),
        (["test", "ct"], "uses stage 'dicom-reader', which has no templates"),
        (["test", "ai-only", "11111111-1111-1111-1111-111111111111"], "no test data for job 11111111-1111-1111-1111-111111111111"),
        (["test", "--release", "Bad_Release"], "invalid release name"),
        (["test", "--engine", "warp"], "'warp' is not one of 'auto'"),
    ],
)
def test_test_refuses_bad_input_before_helm_runs(project, args, fragment):
    before = tree_digest(project)
    result = run_cli(*args, "--dry-run", cwd=project, env={"CLARA_WF_HELM": "/bin/false-helm-must-not-run"}) \
        if "--engine" not in args else run_cli(*args, cwd=project, env={"CLARA_WF_HELM": "/bin/false-helm-must-not-run"})
    assert_one_line_error(result, 2, fragment)
    assert tree_digest(project) == before


def test_verbose_shows_the_external_commands(project):
    result = run_cli("--verbose", "test", "--dry-run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "[clara-wf] $ " in result.stderr and " install test-wf " in result.stderr


def test_a_failing_helm_is_one_line_with_exit_1(project, tmp_path):
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\necho 'Error: something broke in helm' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = run_cli("test", "--dry-run", cwd=project, env={"CLARA_WF_HELM": str(fake)})
    assert_one_line_error(result, 1, "helm version failed: Error: something broke in helm")


def test_missing_helm_says_how_to_get_it(project):
    result = run_cli("test", "--dry-run", cwd=project, env={"CLARA_WF_HELM": "/nonexistent/helm"})
    assert_one_line_error(result, 1, "CLARA_WF_HELM=/nonexistent/helm is not an executable file")


def test_setkey_without_a_key_and_without_a_terminal_is_refused(project):
    result = run_cli("setkey", cwd=project, env={"NGC_API_KEY": ""}, input="")
    assert_one_line_error(result, 2, "no NGC API key: set NGC_API_KEY")


def test_build_without_a_docker_engine_is_a_message_and_a_skip(project, tmp_path, monkeypatch):
    """`--build` for a cluster never fails a run for want of Docker: it says so and goes on
    (the container engine, which runs the images here, makes it an error instead)."""
    import shutil

    from clara_wf.containers.build import build_before_run
    from clara_wf.errors import ExternalToolError
    from clara_wf.project import find_project
    from clara_wf.workflow import plan_run

    shutil.copytree(REPO / "apps" / "ai-vnet", project / "apps" / "ai-vnet")
    run = plan_run(find_project(start=project))
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    docker = fake_bin / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2\nexit 1\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))  # a docker client with no engine, and no podman
    lines: list = []
    assert build_before_run(run, progress=lines.append, required=False) == {}
    assert len(lines) == 1 and lines[0].startswith("--build: skipping the image builds (no container runtime works here: "
                                                   "podman is not installed; docker does not answer (Cannot connect")
    with pytest.raises(ExternalToolError, match="no container runtime works here"):
        build_before_run(run, progress=lines.append, required=True)
    monkeypatch.setenv("PATH", "/nonexistent")
    lines.clear()
    build_before_run(run, progress=lines.append, required=False)
    assert lines[0].startswith("--build: skipping the image builds (no container runtime works here: podman is not "
                               "installed; docker is not installed;")


def test_fake_api_setkey_through_the_cli_creates_the_secret_and_never_shows_the_key(project, tmp_path):
    """`clara-wf setkey` end to end against the HTTP-level fake API server (tests/fake_kube_api.py)."""
    from helpers.fake_kube_api import FakeKubeAPI

    key = "nvapi-cli-secret-0123456789"
    with FakeKubeAPI() as api:
        api.serve_secrets()
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        result = run_cli("--verbose", "setkey", cwd=project, env={"NGC_API_KEY": key, "KUBECONFIG": str(kubeconfig)})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "secret/nvcr.io created"
        assert key not in result.stdout + result.stderr
        again = run_cli("setkey", cwd=project, env={"NGC_API_KEY": key, "KUBECONFIG": str(kubeconfig)})
        assert again.stdout.strip() == "secret/nvcr.io replaced"
        assert "nvcr.io" in api.secrets
