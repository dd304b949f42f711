"""`clara-wf cs` scaffolds the stage's operator app in apps/NAME; `ds` removes it only while untouched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, assert_one_line_error, run_cli, tree_digest

from clara_wf import charts, scaffold
from clara_wf.project import find_project

HAVE_BWRAP = shutil.which("bwrap") is not None
SANDBOXES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap not installed"))]
APP_FILES = ["Dockerfile", "Dockerfile.dockerignore", "env.list", "main.py", "requirements.txt", "wheels"]
GUIDE_JOB = "11111111-1111-1111-1111-111111111111"


def test_cs_scaffolds_the_operator_app_and_prints_the_next_steps(project):
    result = run_cli("cs", "my-op", cwd=project)
    assert result.returncode == 0, result.stderr
    app = project / "apps" / "my-op"
    assert sorted(p.name for p in app.iterdir()) == APP_FILES
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Stage 'my-op' is created at: ")  # the original's two lines come first
    assert lines[1].startswith("Default values for Stage 'my-op' are added to: ")
    assert lines[2] == f"Operator app for Stage 'my-op' is created at: {app} (main.py, requirements.txt, Dockerfile, env.list)"
    steps = "\n".join(lines[3:])
    assert "apps/my-op/main.py" in steps
    assert "test-data/00000000-0000-0000-0000-000000000000/my-op/input/" in steps
    assert "clara-wf test --stage my-op [JOB]" in steps
    for text in (app / name for name in APP_FILES[:-1] + ["wheels/README.md"]):
        assert "[[" not in text.read_text().replace("[[:space:]]", ""), text  # every placeholder filled
    main = (app / "main.py").read_text()
    assert "from clara_wf.payload import clara_payload" in main and "clara_payload.input_entries" in main
    env_list = (app / "env.list").read_text()
    for variable in ("NVIDIA_CLARA_INPUTPATHS=payload:/input", "NVIDIA_CLARA_OUTPUTPATHS=my-op/output:/output",
                     "NVIDIA_CLARA_TRTISURI=", "TRITON_MODEL_NAME=", "TRITON_MODEL_VERSION=",
                     "TRITON_MODEL_INPUT=", "TRITON_MODEL_OUTPUT="):
        assert re.search(rf"^{re.escape(variable)}", env_list, re.M), variable
    values = charts.stage_values(find_project(start=project))["my-op"]
    # Folders that exist at run time (the chart mounts them), so clara_payload's paths are real.
    assert (values["inputs"], values["outputs"]) == ("input", "output")
    assert values["source"] == "apps/my-op" and values["build"] == {"context": ".", "dockerfile": "apps/my-op/Dockerfile"}


def test_cs_no_app_makes_only_the_chart_half(project):
    result = run_cli("cs", "my-op", "--no-app", cwd=project)
    assert result.returncode == 0, result.stderr
    assert not (project / "apps").exists()
    assert (project / "charts/clara-workflow/templates/stages/my-op").is_dir()
    assert "--no-app" in result.stdout


def test_cs_keeps_an_existing_app_byte_for_byte(project):
    app = project / "apps" / "my-op"
    app.mkdir(parents=True)
    (app / "main.py").write_text("print('mine')\n")
    result = run_cli("cs", "my-op", cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"Operator app for Stage 'my-op' is kept as it is: {app}" in result.stdout
    assert [p.name for p in app.iterdir()] == ["main.py"] and (app / "main.py").read_text() == "print('mine')\n"


def test_cs_then_ds_gives_back_the_whole_tree(project):
    before = tree_digest(project)
    assert run_cli("cs", "my-op", cwd=project).returncode == 0
    result = run_cli("ds", "my-op", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Operator app for Stage 'my-op' is deleted (unchanged from the scaffold)" in result.stdout
    assert tree_digest(project) == before


def test_ds_keeps_an_edited_app_and_says_why(project):
    assert run_cli("cs", "my-op", cwd=project).returncode == 0
    app = project / "apps" / "my-op"
    with open(app / "main.py", "a") as handle:
        handle.write("# my change\n")
    (app / "model.py").write_text("")
    (app / "__pycache__").mkdir()  # left by running it or building its image: not the user's work
    (app / "wheels" / "numpy-1.26.4-cp311-none-any.whl").write_bytes(b"PK")
    result = run_cli("ds", "my-op", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "is kept, as it differs from the scaffold (main.py changed, model.py added)" in result.stdout
    assert (app / "main.py").read_text().endswith("# my change\n")
    assert not (project / "charts/clara-workflow/templates/stages/my-op").exists()


def test_a_refused_cs_writes_nothing(project):
    before = tree_digest(project)
    assert_one_line_error(run_cli("cs", "ai-vnet", cwd=project), 2, "already exists")  # in the chart
    assert_one_line_error(run_cli("cs", "Bad_Name", cwd=project), 2, "invalid stage name")
    assert tree_digest(project) == before


def test_a_failure_writing_the_app_rolls_the_chart_half_back(project, monkeypatch):
    before = tree_digest(project)

    real_write = charts.journal.fsio.atomic_write

    def broken(path, *args, **kwargs):
        if Path(path).name == "values.yaml":
            raise OSError("disk full")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(charts.journal.fsio, "atomic_write", broken)  # values.yaml cannot be written
    with pytest.raises(OSError):
        scaffold.create_stage(find_project(start=project), "my-op")
    assert tree_digest(project) == before


# --------------------------------------------------------------------------- the program


def _run_main(app: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-u", str(app / "main.py")], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env}, timeout=60)


def test_scaffold_main_copies_every_input_file_to_the_output(project, tmp_path):
    assert run_cli("cs", "my-op", cwd=project).returncode == 0
    app = project / "apps" / "my-op"
    (tmp_path / "in/a/b").mkdir(parents=True)
    (tmp_path / "in/a/b/x.dcm").write_bytes(b"\x00DICM")
    (tmp_path / "in/top.txt").write_text("t")
    result = _run_main(app, {"NVIDIA_CLARA_INPUTPATHS": f"payload:{tmp_path}/in",
                             "NVIDIA_CLARA_OUTPUTPATHS": f"my-op/output:{tmp_path}/out"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/a/b/x.dcm").read_bytes() == b"\x00DICM" and (tmp_path / "out/top.txt").read_text() == "t"
    assert "my-op: 2 file(s) from 1 input(s)" in result.stdout


def test_scaffold_main_puts_several_inputs_in_one_folder_each_and_reads_the_chart_variables(project, tmp_path):
    assert run_cli("cs", "my-op", cwd=project).returncode == 0
    app = project / "apps" / "my-op"
    for folder in ("input", "up"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "f").write_text(folder)
    result = _run_main(app, {"NVIDIA_CLARA_INPUTPATHS": f"payload:{tmp_path}/input;up-op/seg:{tmp_path}/up",
                             "NVIDIA_CLARA_OUTPUTPATHS": f"my-op/output:{tmp_path}/out"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/payload/f").read_text() == "input" and (tmp_path / "out/up-op/seg/f").read_text() == "up"
    # The chart's form: APPDIR + INPUTS/OUTPUTS, the scaffold's defaults.
    result = _run_main(app, {"NVIDIA_CLARA_APPDIR": str(tmp_path), "NVIDIA_CLARA_INPUTS": "input",
                             "NVIDIA_CLARA_OUTPUTS": "output", "NVIDIA_CLARA_STAGENAME": "my-op"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "output/f").read_text() == "input"


def test_scaffold_main_names_a_missing_input(project, tmp_path):
    assert run_cli("cs", "my-op", cwd=project).returncode == 0
    result = _run_main(project / "apps" / "my-op", {"NVIDIA_CLARA_INPUTPATHS": f"payload:{tmp_path}/nope",
                                                    "NVIDIA_CLARA_OUTPUTPATHS": f"o:{tmp_path}/out"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"my-op: error: input 'payload' ({tmp_path}/nope) does not exist"


def test_the_pipeline_driver_form_gives_clara_payload_as_a_global(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "odk.py").write_text("import sys\nprint([e.name for e in clara_payload.input_entries], sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-S", "-m", "clara_wf.payload", "odk.py", "--flag"], cwd=tmp_path,
                            env={"PYTHONPATH": str(REPO), "NVIDIA_CLARA_INPUTPATHS": f"payload:{tmp_path}/in"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['payload'] ['--flag']"


def test_scaffold_dockerfile_replayed_runs_the_stage_stand_alone_with_the_stdlib_only(project, tmp_path):
    """No container engine is needed to check what the image holds: replay its COPY lines into a
    folder, then run the ENTRYPOINT + CMD there as `docker run --env-file env.list
    -e NVIDIA_CLARA_NOSYNCLOCK=TRUE` would (an interpreter without site-packages)."""
    assert run_cli("cs", "my-op", cwd=project).returncode == 0
    app = project / "apps" / "my-op"
    root = tmp_path / "root"  # the build context: the project root, with clara_wf in it
    shutil.copytree(app, root / "apps" / "my-op")
    shutil.copytree(REPO / "clara_wf", root / "clara_wf", ignore=shutil.ignore_patterns("__pycache__"))
    dockerfile = (app / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+$", dockerfile, re.M) and "FROM ${BASE_IMAGE}" in dockerfile
    image = tmp_path / "image"
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            for source in sources:
                src, target = root / source, image / dest.lstrip("/")
                assert src.exists(), f"Dockerfile copies {source}, which the project root does not hold"
                target = target / src.name if dest.endswith("/") else target
                target.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copy)(src, target)
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1)
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    assert entry == '["python3", "-m", "clara_wf.runner", "--"]' and cmd == '["python3", "-u", "main.py"]'
    pythonpath = re.search(r"^ENV PYTHONPATH=(\S+)$", dockerfile, re.M).group(1)
    (tmp_path / "input/s").mkdir(parents=True)
    (tmp_path / "input/s/1.dcm").write_text("one")
    env = {"PYTHONPATH": str(image) + pythonpath, "NVIDIA_CLARA_NOSYNCLOCK": "TRUE", "PATH": os.environ["PATH"]}
    for line in (app / "env.list").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.replace(":/input", f":{tmp_path}/input").replace(":/output", f":{tmp_path}/output")
    python = [sys.executable, "-S"]
    result = subprocess.run([*python, "-m", "clara_wf.runner", "--", *python, "-u", "main.py"], cwd=image / "app",
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "output/s/1.dcm").read_text() == "one"
    # The requirements step is skipped while requirements.txt lists nothing (no pip needed).
    check = re.search(r"if (grep .*?requirements.txt);", dockerfile).group(1).replace("/tmp/deps/requirements.txt", "r.txt")
    shutil.copy(app / "requirements.txt", tmp_path / "r.txt")
    assert subprocess.run(["sh", "-c", check], cwd=tmp_path).returncode == 1
    (tmp_path / "r.txt").write_text("# a comment\n  \npydicom>=3\n")
    assert subprocess.run(["sh", "-c", check], cwd=tmp_path).returncode == 0


@pytest.mark.helm
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_the_guides_walkthrough_runs_on_the_scaffold(project, sandbox):
    """Seed 003: `cs dicom-reader`, a DICOM file under test-data/1111…/dicom-reader/input/…,
    `test dicom-reader-only 1111…`: the pass-through copies it to the stage's output."""
    if (project / "charts/clara-workflow/templates/stages/dicom-reader").exists():
        charts.delete_stage(find_project(start=project), "dicom-reader", force=True)  # the reference one
    assert run_cli("cs", "dicom-reader", cwd=project).returncode == 0
    series = project / "test-data" / GUIDE_JOB / "dicom-reader/input/patient-id/study-uid/series-uid"
    series.mkdir(parents=True)
    (series / "SOP-uid.dcm").write_bytes(b"\x00" * 128 + b"DICM")
    result = run_cli("test", "dicom-reader-only", GUIDE_JOB, "--engine", "local", "--sandbox", sandbox, cwd=project)
    assert result.returncode == 0, result.stderr
    out = project / "test-data" / GUIDE_JOB / "dicom-reader/output/patient-id/study-uid/series-uid/SOP-uid.dcm"
    assert out.read_bytes() == b"\x00" * 128 + b"DICM"
