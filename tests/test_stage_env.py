"""Each stage runs with its own Python environment, made once per requirements.txt by uv."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO, run_cli

from clara_wf import stage_env
from clara_wf.errors import ExternalToolError

JOB = "00000000-0000-0000-0000-000000000000"
# A small pure-Python package, pinned: what the index serves for it never changes.
PACKAGE = "six==1.16.0"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CLARA_WF_CACHE", str(folder))
    return folder


def test_the_key_is_the_requirements_content_not_their_comments():
    key = stage_env.env_key("six==1.16.0\n")
    assert stage_env.env_key("# the stage's libraries\n\n  six==1.16.0  \n") == key
    assert stage_env.env_key("six==1.17.0\n") != key
    assert len(key) == 16


def test_made_once_then_reused_with_no_uv_and_no_network(cache, tmp_path, monkeypatch):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# comment\n{PACKAGE}\n")
    lines = []
    first = stage_env.ensure(requirements, progress=lines.append, what="stage s")
    assert first.built and first.folder.parent == cache / "venvs"
    assert any("installing 1 requirement(s) with uv" in line for line in lines)
    assert any("+ six==1.16.0" in line for line in lines)  # uv's own progress, passed on
    probe = subprocess.run([str(first.python), "-c", "import six, sys; print(six.__version__, sys.prefix)"],
                           capture_output=True, text=True)
    assert probe.stdout.split() == ["1.16.0", str(first.folder)]

    def no_uv():
        raise AssertionError("uv must not run for a cached environment")

    monkeypatch.setattr(stage_env, "uv_binary", no_uv)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # any network use would fail
    lines.clear()
    again = stage_env.ensure(requirements, progress=lines.append)
    assert (again.python, again.built, lines) == (first.python, False, [])


def test_an_interrupted_build_is_made_again(cache, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing to install\n")
    half = cache / "venvs" / stage_env.env_key(requirements.read_text())
    (half / "bin").mkdir(parents=True)  # no .complete marker: killed midway
    made = stage_env.ensure(requirements)
    assert made.built and made.python.exists() and (half / stage_env.COMPLETE).is_file()


def test_a_requirement_the_index_lacks_is_one_clear_error(cache, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("no-such-package-clara-wf-test==0.0.1\n")
    with pytest.raises(ExternalToolError, match="stage x: uv could not make the environment"):
        stage_env.ensure(requirements, what="stage x")
    assert not (cache / "venvs" / stage_env.env_key(requirements.read_text()) / stage_env.COMPLETE).exists()


def test_stage_lib_holds_only_the_standard_library_modules_stages_import(cache):
    lib = stage_env.stage_lib()
    files = sorted(str(p.relative_to(lib)) for p in lib.rglob("*.py"))
    assert files[:2] == ["clara_wf/__init__.py", "clara_wf/payload.py"]
    assert all(f.startswith("clara_wf/runner/") for f in files[2:]) and "clara_wf/runner/__main__.py" in files
    probe = subprocess.run([sys.executable, "-I", "-S", "-c",
                            f"import sys; sys.path.insert(0, {str(lib)!r}); import clara_wf.payload, clara_wf.runner"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert stage_env.stage_lib() == lib  # keyed by content: made once


SHOW = '''import sys
print("python", sys.executable)
import six
print("six", six.__version__)
try:
    import typer
    print("clara-wf's libraries are visible")
except ImportError:
    print("isolated from clara-wf's environment")
from clara_wf.payload import clara_payload
print("inputs", [e.name for e in clara_payload.input_entries])
'''


@pytest.mark.helm
def test_the_local_engine_runs_the_stage_with_its_own_environment(project, cache):
    assert run_cli("cs", "my-op", cwd=project, env={"CLARA_WF_CACHE": str(cache)}).returncode == 0
    app = project / "apps" / "my-op"
    with open(app / "requirements.txt", "a") as handle:
        handle.write(f"{PACKAGE}\n")
    (app / "main.py").write_text(SHOW)
    (project / "test-data" / JOB / "my-op" / "input").mkdir(parents=True)
    env = {"CLARA_WF_CACHE": str(cache)}
    first = run_cli("test", "--stage", "my-op", "--engine", "local", cwd=project, env=env)
    assert first.returncode == 0, first.stderr
    venv = cache / "venvs" / stage_env.env_key((app / "requirements.txt").read_text())
    assert "stage my-op: creating its Python environment" in first.stderr
    assert f"my-op | python {venv}/bin/python" in first.stderr
    for line in ("six 1.16.0", "isolated from clara-wf's environment", "inputs ['payload']"):
        assert f"my-op | {line}" in first.stderr, line
    again = run_cli("test", "--stage", "my-op", "--engine", "local", "--sandbox", "none", cwd=project,
                    env={**env, "HTTPS_PROXY": "http://127.0.0.1:9", "UV_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr
    assert "creating its Python environment" not in again.stderr and "my-op | six 1.16.0" in again.stderr


def test_tools_stage_envs_prepares_every_app(cache, tmp_path):
    for name, requirements in (("a", f"{PACKAGE}\n"), ("b", "# none\n")):
        (tmp_path / "apps" / name).mkdir(parents=True)
        (tmp_path / "apps" / name / "requirements.txt").write_text(requirements)
    (tmp_path / "apps" / "c").mkdir()  # no requirements: runs with clara-wf's interpreter
    env = {**os.environ, "CLARA_WF_CACHE": str(cache)}
    result = subprocess.run([sys.executable, str(REPO / "tools" / "stage_envs.py"), str(tmp_path / "apps")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "stage a: made Python environment" in result.stdout and "stage b: made" in result.stdout
    assert "stage c" not in result.stdout
    again = subprocess.run([sys.executable, str(REPO / "tools" / "stage_envs.py"), str(tmp_path / "apps")],
                           capture_output=True, text=True, env=env)
    assert again.stdout.count("cached Python environment") == 2


def test_clara_wf_itself_carries_no_stage_library():
    """The local engine's extra holds Triton and uv; each stage's libraries are its own."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    local = " ".join(extras["local"]).lower()
    assert "uv" in local
    for stage_library in ("simpleitk", "tritonclient", "pydicom", "highdicom"):
        assert stage_library not in local, stage_library
