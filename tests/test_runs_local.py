"""Runs you can trust and repeat, on the local engine: fresh outputs, run.json, logs, stage
run timeouts and retries from values, --from/--only, fail-fast and no orphans."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import JOB, assert_error_last_line, run_cli
from helpers.workflows import add_workflow, python_stage
from ruamel.yaml import YAML

pytestmark = pytest.mark.helm
HAVE_BWRAP = shutil.which("bwrap") is not None
SANDBOXES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap not installed"))]

# The reader copies every input file to its output; the counter lists what it was given.
READER = ("import os, pathlib, shutil; app = pathlib.Path(os.environ['NVIDIA_CLARA_APPDIR']);"
          "[shutil.copy(f, app / 'output' / f.name) for f in sorted((app / 'input').iterdir())];"
          "print('read', sorted(f.name for f in (app / 'input').iterdir()))")
COUNTER = ("import os, pathlib; app = pathlib.Path(os.environ['NVIDIA_CLARA_APPDIR']);"
           "seen = sorted(f.name for f in (app / 'input').iterdir());"
           "(app / 'output' / 'seen.txt').write_text(' '.join(seen)); print('saw', seen)")
# Appends its stage name to a tally in the job folder: which stages really ran.
TALLY = ("import os, pathlib; app = pathlib.Path(os.environ['NVIDIA_CLARA_APPDIR']);"
         "name = os.environ['NVIDIA_CLARA_STAGENAME'];"
         "src = [f for f in (app / 'input').iterdir()] if (app / 'input').is_dir() else [];"
         "text = ''.join(f.read_text() for f in sorted(src)) + name + ';';"
         "(app / 'output' / 'out.txt').write_text(text);"
         "tally = pathlib.Path(os.environ['TALLY']); tally.open('a').write(name + '\\n')")


def payload(project: Path) -> Path:
    return project / "test-data" / JOB


def record_of(project: Path) -> dict:
    return json.loads((payload(project) / "run.json").read_text())


def stages_of(record: dict) -> dict:
    return {s["stage"]: s for s in record["stages"]}


def set_stage(project: Path, stage: str, **values) -> None:
    yaml = YAML()
    path = project / "charts" / "clara-workflow" / "values.yaml"
    data = yaml.load(path.read_text())
    for key, value in values.items():
        data["stages"][stage][key] = value
    out = io.StringIO()
    yaml.dump(data, out)
    path.write_text(out.getvalue())


def _alive_with(token: str):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if token in cmdline and state != "Z":
                found.append(int(entry))
    return found


def _sleeps(token: str):
    """Live `sleep TOKEN` processes (not the shells or runners whose arguments name them)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
                state = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if argv[:2] == [b"sleep", token.encode()] and state != "Z":
                found.append(int(entry))
    return found


def _token() -> str:
    return "%d.%06d" % (600 + random.randrange(300), random.randrange(10**6))


# -- fresh outputs -------------------------------------------------------------------


def test_a_deleted_input_is_not_seen_again_and_the_previous_run_is_kept(project):
    add_workflow(project, "two", {"reader": python_stage(READER), "counter": python_stage(COUNTER)})
    inp = payload(project) / "reader" / "input"
    inp.mkdir(parents=True)
    (inp / "CT_small.dcm").write_text("ct")
    (inp / "MR_small.dcm").write_text("mr")
    first = run_cli("test", "two", "--engine", "local", "--sandbox", "none", cwd=project)
    assert first.returncode == 0, first.stderr
    assert (payload(project) / "counter" / "output" / "seen.txt").read_text() == "CT_small.dcm MR_small.dcm"
    first_id = record_of(project)["run_id"]

    (inp / "MR_small.dcm").unlink()
    second = run_cli("test", "two", "--engine", "local", "--sandbox", "none", cwd=project)
    assert second.returncode == 0, second.stderr
    assert (payload(project) / "counter" / "output" / "seen.txt").read_text() == "CT_small.dcm"
    assert sorted(p.name for p in (payload(project) / "reader" / "output").iterdir()) == ["CT_small.dcm"]
    kept = payload(project) / "runs" / first_id
    assert (kept / "counter" / "output" / "seen.txt").read_text() == "CT_small.dcm MR_small.dcm"
    assert json.loads((kept / "run.json").read_text())["run_id"] == first_id
    assert sorted(p.name for p in inp.iterdir()) == ["CT_small.dcm"]  # inputs untouched
    assert record_of(project)["run_id"] != first_id


def test_a_failed_run_lists_only_its_own_files(project):
    add_workflow(project, "one", {"writer": ["sh", "-c", 'touch "$NVIDIA_CLARA_APPDIR/output/$OUT"; exit "$CODE"']})
    (payload(project) / "writer" / "input").mkdir(parents=True)
    set_stage(project, "writer", env={"OUT": "old.txt", "CODE": "0"})
    assert run_cli("test", "one", "--engine", "local", "--sandbox", "none", cwd=project).returncode == 0
    set_stage(project, "writer", env={"OUT": "new.txt", "CODE": "3"})
    result = run_cli("test", "one", "--engine", "local", "--sandbox", "none", cwd=project)
    assert result.returncode == 1
    assert "new.txt" in result.stdout and "old.txt" not in result.stdout
    assert record_of(project)["status"] == "failed"


def test_clean_deletes_and_keep_runs_bounds_the_archive(project):
    add_workflow(project, "one", {"w": ["true"]})
    (payload(project) / "w" / "input").mkdir(parents=True)
    for _ in range(3):
        assert run_cli("test", "one", "--engine", "local", "--sandbox", "none", "--keep-runs", "1",
                       cwd=project).returncode == 0
    assert len(list((payload(project) / "runs").iterdir())) == 1
    assert run_cli("test", "one", "--engine", "local", "--sandbox", "none", "--clean", "--keep-runs", "1",
                   cwd=project).returncode == 0
    assert len(list((payload(project) / "runs").iterdir())) == 1  # the previous run was deleted, not kept


# -- the run record, summary and logs ------------------------------------------------


def test_run_json_is_written_at_start_and_tells_the_whole_run(project):
    add_workflow(project, "two", {"reader": python_stage(READER), "slow": ["sh", "-c", "sleep 1.5; echo done > \"$NVIDIA_CLARA_APPDIR/output/r.txt\""]})
    (payload(project) / "reader" / "input").mkdir(parents=True)
    (payload(project) / "reader" / "input" / "x.dcm").write_text("x")
    proc = subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "two", "--engine", "local", "--sandbox", "none"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    seen_running = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            data = record_of(project)
        except (OSError, ValueError):
            time.sleep(0.02)
            continue
        if data["status"] == "running" and stages_of(data)["slow"]["state"] == "running":
            seen_running = data
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert seen_running is not None and seen_running["end"] is None
    data = record_of(project)
    assert data["status"] == "succeeded" and data["workflow"] == "two" and data["job_id"] == JOB
    assert data["engine"] == "local" and data["clara_wf_version"] and data["chart_version"] == "0.1.0"
    assert data["duration_s"] > 1.5 and data["start"] < data["end"]
    slow = stages_of(data)["slow"]
    assert slow["state"] == "done" and slow["exit_code"] == 0 and slow["run_s"] >= 1.4 and slow["wait_s"] >= 0
    assert slow["log"] == "logs/slow.log" and len(slow["attempts"]) == 1
    (output,) = slow["outputs"]
    assert output["path"] == "slow/output/r.txt" and output["size"] == 5
    assert output["sha256"] == hashlib.sha256(b"done\n").hexdigest()
    # The end-of-run table, then the listing, then the result.
    assert "STAGE" in out and "ATTEMPTS" in out and f"run {data['run_id']}: succeeded in" in out
    assert out.index("STAGE") < out.index("ls -al") < out.index("executed")


def test_output_json_prints_the_record(project):
    add_workflow(project, "one", {"w": ["true"]})
    (payload(project) / "w" / "input").mkdir(parents=True)
    result = run_cli("test", "one", "--engine", "local", "--sandbox", "none", "--output", "json", cwd=project)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == record_of(project)


def test_logs_per_run_and_stage_with_time_stamps(project):
    add_workflow(project, "two", {"a": ["sh", "-c", "echo from-a-$RUN"], "b": ["sh", "-c", "echo from-b-$RUN >&2"]})
    (payload(project) / "a" / "input").mkdir(parents=True)
    set_stage(project, "a", env={"RUN": "1"})
    set_stage(project, "b", env={"RUN": "1"})
    assert run_cli("test", "two", "--engine", "local", "--sandbox", "none", cwd=project).returncode == 0
    first = record_of(project)["run_id"]
    set_stage(project, "a", env={"RUN": "2"})
    assert run_cli("test", "two", "--engine", "local", "--sandbox", "none", cwd=project).returncode == 0

    one = run_cli("logs", "two", JOB, "a", cwd=project)
    assert one.returncode == 0, one.stderr
    assert "from-a-2" in one.stdout and "from-a-1" not in one.stdout
    line = next(line for line in one.stdout.splitlines() if line.endswith("from-a-2"))
    assert line[4] == "-" and line[10] == "T" and line[23:25] == "Z "  # a UTC time stamp, then the text
    both = run_cli("logs", "two", JOB, "--run", first, cwd=project)
    assert both.returncode == 0, both.stderr
    lines = both.stdout.splitlines()
    assert any(line.startswith("a | ") and line.endswith("from-a-1") for line in lines)
    assert any(line.startswith("b | ") and line.endswith("from-b-1") for line in lines)
    outputs = [line for line in lines if line.endswith(("from-a-1", "from-b-1"))]
    assert outputs[0].endswith("from-a-1") and outputs[1].endswith("from-b-1")  # merged in time order
    bad = run_cli("logs", "two", JOB, "--run", "nope", cwd=project)
    assert_error_last_line(bad, 2, "no run 'nope'")


def test_logs_follow_ends_with_the_run(project):
    add_workflow(project, "one", {"w": ["sh", "-c", "echo first; sleep 1; echo second"]})
    (payload(project) / "w" / "input").mkdir(parents=True)
    run = subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "one", "--engine", "local", "--sandbox", "none"],
                           cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (payload(project) / "logs" / "w.log").exists():
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.02)
    follow = run_cli("logs", "one", JOB, "w", "--follow", cwd=project)
    assert run.wait(60) == 0
    assert follow.returncode == 0 and "first" in follow.stdout and "second" in follow.stdout


# -- run timeout and retries from values -----------------------------------------------


def test_run_timeout_and_retries_set_in_values(project):
    add_workflow(project, "two", {"flaky": ["sh", "-c", 'n=$(cat "$COUNT" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$COUNT"; [ $n -ge 3 ]'],
                                  "slow": ["sleep", "60"]})
    (payload(project) / "flaky" / "input").mkdir(parents=True)
    set_stage(project, "flaky", retries=2, retryBackoff="0.05", env={"COUNT": str(project / "count")})
    set_stage(project, "slow", runTimeout="0.5")
    result = run_cli("test", "two", "--engine", "local", "--sandbox", "none", cwd=project)
    assert result.returncode == 1
    stages = stages_of(record_of(project))
    assert [a["program_exit_code"] for a in stages["flaky"]["attempts"]] == [1, 1, 0]
    assert stages["flaky"]["state"] == "done"
    assert stages["slow"]["status"] == "run-timeout" and stages["slow"]["exit_code"] == 117
    assert "stage slow failed: program stopped by its run timeout (NVIDIA_CLARA_RUNTIMEOUT = 0.5 s)" in result.stderr
    assert "3" in result.stdout.split("flaky", 1)[1].splitlines()[0]  # the table's attempts column


# -- rerun -----------------------------------------------------------------------------


def _chain(project: Path) -> Path:
    tally = project / "tally.txt"
    add_workflow(project, "chain", {"a": python_stage(TALLY), "b": python_stage(TALLY), "c": python_stage(TALLY)})
    for name in "abc":
        set_stage(project, name, env={"TALLY": str(tally)})
    (payload(project) / "a" / "input").mkdir(parents=True)
    return tally


def test_from_reruns_only_the_downstream_stages_on_the_recorded_outputs(project):
    tally = _chain(project)
    assert run_cli("test", "chain", "--engine", "local", "--sandbox", "none", cwd=project).returncode == 0
    full = record_of(project)
    tally.write_text("")
    result = run_cli("test", "chain", "--engine", "local", "--sandbox", "none", "--from", "b", cwd=project)
    assert result.returncode == 0, result.stderr
    assert tally.read_text() == "b\nc\n"
    assert (payload(project) / "c" / "output" / "out.txt").read_text() == "a;b;c;"
    data = record_of(project)
    assert data["mode"]["kind"] == "from" and data["mode"]["reused_from"] == full["run_id"]
    stages = stages_of(data)
    assert stages["a"]["state"] == "reused" and stages["a"]["outputs"] == stages_of(full)["a"]["outputs"]
    assert stages["b"]["state"] == stages["c"]["state"] == "done"

    tally.write_text("")
    only = run_cli("test", "chain", "--engine", "local", "--sandbox", "none", "--only", "b", cwd=project)
    assert only.returncode == 0, only.stderr
    assert tally.read_text() == "b\n"
    assert stages_of(record_of(project))["c"]["state"] == "skipped"


def test_from_refuses_when_an_upstream_output_was_edited(project):
    _chain(project)
    assert run_cli("test", "chain", "--engine", "local", "--sandbox", "none", cwd=project).returncode == 0
    edited = payload(project) / "a" / "output" / "out.txt"
    edited.write_text("edited by hand")
    before = sorted(str(p) for p in payload(project).rglob("*"))
    record_before = (payload(project) / "run.json").read_text()
    result = run_cli("test", "chain", "--engine", "local", "--sandbox", "none", "--from", "b", cwd=project)
    assert_error_last_line(result, 2, "--from b:", "a/output/out.txt (output of a in run", "changed since it was recorded")
    assert sorted(str(p) for p in payload(project).rglob("*")) == before  # nothing moved
    assert (payload(project) / "run.json").read_text() == record_before
    fresh = run_cli("test", "chain", "--engine", "local", "--sandbox", "none", "--from", "nope", cwd=project)
    assert_error_last_line(fresh, 2, "--from nope: workflow 'chain' has no stage 'nope'")


def test_from_on_a_dag_reuses_the_other_branch(project):
    tally = project / "tally.txt"
    add_workflow(project, "diamond", {n: python_stage(TALLY) for n in ("top", "left", "right", "join")},
                 waits=["", "top.lock", "top.lock", "left.lock,right.lock"])
    for name in ("top", "left", "right", "join"):
        set_stage(project, name, env={"TALLY": str(tally)})
    (payload(project) / "top" / "input").mkdir(parents=True)
    assert run_cli("test", "diamond", "--engine", "local", "--sandbox", "none", cwd=project).returncode == 0
    tally.write_text("")
    result = run_cli("test", "diamond", "--engine", "local", "--sandbox", "none", "--from", "left", cwd=project)
    assert result.returncode == 0, result.stderr
    assert sorted(tally.read_text().split()) == ["join", "left"]
    assert {s: e["state"] for s, e in stages_of(record_of(project)).items()} == {
        "top": "reused", "left": "done", "right": "reused", "join": "done"}


def test_ctrl_c_during_a_rerun_keeps_the_run_it_reuses(project):
    tally = _chain(project)
    assert run_cli("test", "chain", "--engine", "local", "--sandbox", "none", cwd=project).returncode == 0
    good = record_of(project)["run_id"]
    token = _token()
    set_stage(project, "b", command=["sleep", token])
    proc = subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "chain", "--engine", "local", "--sandbox", "none",
                             "--from", "b"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _alive_with(f"sleep {token}"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    data = record_of(project)
    assert data["status"] == "interrupted" and stages_of(data)["b"]["state"] == "stopped"
    set_stage(project, "b", command=["python3", "-c", TALLY])
    tally.write_text("")
    again = run_cli("test", "chain", "--engine", "local", "--sandbox", "none", "--from", "b", cwd=project)
    assert again.returncode == 0, again.stderr
    assert record_of(project)["mode"]["reused_from"] == good and tally.read_text() == "b\nc\n"


# -- fail fast and orphans -------------------------------------------------------------


def _stat(pid: int) -> list:
    return Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()


def _runner_of(token: str) -> int:
    """The runner (named clara-wf-stage) above the program `sh -c "setsid sleep T & sleep T"`."""
    for pid in _sleeps(token):
        fields = _stat(pid)
        if int(fields[3]) == pid:
            continue  # the setsid'ed one
        while pid > 1:
            pid = int(_stat(pid)[1])
            if Path("/proc", str(pid), "comm").read_text().strip() == "clara-wf-stage":
                return pid
    raise AssertionError("no runner found")


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_dependants_stop_within_a_second_when_an_upstream_runner_is_killed(project, sandbox):
    token = _token()
    add_workflow(project, "two", {"up": ["sh", "-c", f"setsid sleep {token} & sleep {token}"], "down": ["true"]},
                 timeout="120")
    (payload(project) / "up" / "input").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "two", "--engine", "local", "--sandbox", sandbox],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_sleeps(token)) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    pid = _runner_of(token)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    marker = payload(project) / "locks" / "down.lock.failed"
    while not marker.exists():
        assert time.monotonic() - killed < 10, "down did not stop"
        time.sleep(0.01)
    stopped_after = time.monotonic() - killed
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert stopped_after < 1.0, stopped_after
    assert "stage up failed: the stage runner ended without writing its lock or failure marker" in err
    assert json.loads(marker.read_text())["status"] == "upstream-failed"
    deadline = time.monotonic() + 5
    while _alive_with(f"sleep {token}") and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _alive_with(f"sleep {token}")
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []  # the setsid'ed one included


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_kill_9_of_clara_wf_leaves_nothing_running(project, sandbox):
    token = _token()
    add_workflow(project, "one", {"bg": ["sh", "-c", f"sleep {token} & setsid sleep {token} & nohup sleep {token} & sleep {token}"]})
    (payload(project) / "bg" / "input").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "clara_wf", "test", "one", "--engine", "local", "--sandbox", sandbox],
                            cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_sleeps(token)) < 4:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _alive_with(token)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_background_children_end_with_a_successful_stage_at_once(project):
    token = _token()
    add_workflow(project, "one", {"bg": ["sh", "-c", f"sleep {token} & setsid sleep {token} & nohup sleep {token} >/dev/null 2>&1 & echo forked"]})
    (payload(project) / "bg" / "input").mkdir(parents=True)
    result = run_cli("test", "one", "--engine", "local", "--sandbox", "none", cwd=project)
    assert result.returncode == 0, result.stderr
    assert _alive_with(token) == []
    run_s = stages_of(record_of(project))["bg"]["run_s"]
    assert run_s < 3.0  # not 5 s per output stream
