"""Run ids, fresh outputs, the run record and rerun planning (clara_wf/runs.py), on plain folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clara_wf import runs
from clara_wf.errors import InputError


def _container(name, mounts, inputpaths=None):
    env = [
        {"name": "NVIDIA_CLARA_APPDIR", "value": "/app"},
        {"name": "NVIDIA_CLARA_LOCKDIR", "value": "/app/locks"},
        {"name": "NVIDIA_CLARA_LOGNAME", "value": f"/app/logs/{name}.log"},
    ]
    if inputpaths:
        env.append({"name": "NVIDIA_CLARA_INPUTPATHS", "value": inputpaths})
    vm = [{"name": "claim", "mountPath": p, "subPath": s} for p, s in mounts]
    vm += [{"name": "claim", "mountPath": "/app/locks", "subPath": "locks"},
           {"name": "claim", "mountPath": "/app/logs", "subPath": "logs"},
           {"name": "claim", "mountPath": "/payloads"}]
    return {"name": name, "env": env, "volumeMounts": vm}


# a (reads the payload) -> b -> c, seed form
CHAIN = {"containers": [
    _container("a", [("/app/input", "a/input"), ("/app/output", "a/output")]),
    _container("b", [("/app/input", "a/output"), ("/app/output", "b/output")]),
    _container("c", [("/app/input", "b/output"), ("/app/output", "c/output")]),
]}
EDGES = [("a", "b"), ("b", "c")]


def test_layout_tells_inputs_outputs_and_shared_folders(tmp_path):
    layout = runs.layout_from_pod(CHAIN, tmp_path)
    assert layout.payload_inputs == ("a/input",)
    assert layout.stage_outputs == {"a": ("a/output",), "b": ("b/output",), "c": ("c/output",)}
    assert layout.shared == ("locks", "logs")
    assert layout.generated() == ["locks", "logs", "run.json", "a/output", "b/output", "c/output"]


def test_layout_of_a_dag_stage_reads_its_inputpaths(tmp_path):
    pod = {"containers": [_container("seg", [("/in/ct", "ct"), ("/in/mask", "pre/out"), ("/out", "seg/out")],
                                     inputpaths="payload:/in/ct;pre/out:/in/mask")]}
    layout = runs.layout_from_pod(pod, tmp_path)
    assert layout.stage_inputs["seg"] == ("ct", "pre/out") and layout.stage_outputs["seg"] == ("seg/out",)


def _fake_run(job: Path, run_id: str, status: str = "succeeded", content: str = "x") -> None:
    for rel in ("a/output/f.txt", "b/output/f.txt", "locks/a.lock", "logs/a.log"):
        (job / rel).parent.mkdir(parents=True, exist_ok=True)
        (job / rel).write_text(content + rel)
    layout = runs.layout_from_pod(CHAIN, job)
    record = runs.RunRecord.start(job_dir=job, run_id=run_id, workflow="wf", job_id="j", job_name="n",
                                  engine="local", stages=["a", "b", "c"], layout=layout)
    for name in ("a", "b", "c"):
        record.stage_from_runner(name, {"status": "succeeded", "start_epoch": 1.0, "end_epoch": 2.0,
                                        "program_exit_code": 0, "attempts": [], "waited_s": 0.5},
                                 "done", 0)
    record.finish(status, "")


def test_previous_run_moves_under_runs_and_inputs_stay(tmp_path):
    (tmp_path / "a" / "input").mkdir(parents=True)
    (tmp_path / "a" / "input" / "ct.dcm").write_text("input")
    _fake_run(tmp_path, "20240101T000000Z-0001")
    layout = runs.layout_from_pod(CHAIN, tmp_path)
    assert runs.archive_previous(layout) == "20240101T000000Z-0001"
    kept = tmp_path / "runs" / "20240101T000000Z-0001"
    assert (kept / "a/output/f.txt").read_text() == "xa/output/f.txt"
    assert (kept / "run.json").is_file() and (kept / "logs/a.log").is_file()
    assert not (tmp_path / "a" / "output").exists() and not (tmp_path / "run.json").exists()
    assert (tmp_path / "a" / "input" / "ct.dcm").read_text() == "input"  # never touched
    assert runs.archive_previous(layout) is None  # nothing left to move


def test_keep_prunes_old_runs_but_not_the_last_successful_one(tmp_path):
    layout = runs.layout_from_pod(CHAIN, tmp_path)
    _fake_run(tmp_path, "20240101T000000Z-0001", "succeeded")
    runs.archive_previous(layout, keep=2)
    for i in range(2, 5):
        _fake_run(tmp_path, f"20240101T00000{i}Z-000{i}", "failed")
        runs.archive_previous(layout, keep=2)
    assert [rid for rid, _ in runs.archived_runs(tmp_path)] == [
        "20240101T000000Z-0001", "20240101T000003Z-0003", "20240101T000004Z-0004"]


def test_clean_deletes_instead(tmp_path):
    _fake_run(tmp_path, "r1")
    layout = runs.layout_from_pod(CHAIN, tmp_path)
    assert runs.archive_previous(layout, clean=True) is None
    assert sorted(os.listdir(tmp_path)) == ["a", "b"] and not list(tmp_path.rglob("*.txt"))


def test_record_is_written_whole_with_versions_and_outputs(tmp_path):
    _fake_run(tmp_path, "r1")
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["run_id"] == "r1" and data["status"] == "succeeded" and data["clara_wf_version"]
    assert data["duration_s"] is not None and data["end"] is not None
    stages = {s["stage"]: s for s in data["stages"]}
    out = stages["a"]["outputs"]
    assert out == [{"path": "a/output/f.txt", "size": 15, "sha256": runs.sha256_of(tmp_path / "a/output/f.txt")}]
    assert stages["a"]["wait_s"] == 0.5 and stages["a"]["state"] == "done"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_rerun_from_reuses_upstream_and_refuses_an_edited_output(tmp_path):
    _fake_run(tmp_path, "r1")
    rerun = runs.plan_rerun(tmp_path, "wf", ["a", "b", "c"], EDGES, from_stage="b")
    assert rerun.run == ("b", "c") and rerun.reuse == ("a",) and rerun.source_run_id == "r1"
    only = runs.plan_rerun(tmp_path, "wf", ["a", "b", "c"], EDGES, only_stage="b")
    assert only.run == ("b",) and only.reuse == ("a",)
    (tmp_path / "a/output/f.txt").write_text("edited!")
    with pytest.raises(InputError, match=r"--from b: .*a/output/f.txt \(output of a in run r1\) changed"):
        runs.plan_rerun(tmp_path, "wf", ["a", "b", "c"], EDGES, from_stage="b")
    (tmp_path / "a/output/f.txt").unlink()
    with pytest.raises(InputError, match="is missing"):
        runs.plan_rerun(tmp_path, "wf", ["a", "b", "c"], EDGES, from_stage="b")


def test_rerun_needs_a_successful_run(tmp_path):
    with pytest.raises(InputError, match="no successful run of workflow 'wf'"):
        runs.plan_rerun(tmp_path, "wf", ["a", "b", "c"], EDGES, from_stage="b")
    _fake_run(tmp_path, "r1")
    with pytest.raises(InputError, match="has no stage 'x'"):
        runs.plan_rerun(tmp_path, "wf", ["a", "b", "c"], EDGES, from_stage="x")


def test_restore_copies_the_reused_outputs_back(tmp_path):
    _fake_run(tmp_path, "r1")
    layout = runs.layout_from_pod(CHAIN, tmp_path)
    rerun = runs.plan_rerun(tmp_path, "wf", ["a", "b", "c"], EDGES, from_stage="c")
    moved = runs.archive_previous(layout)
    runs.restore_reused(rerun, layout, tmp_path / "runs" / moved)
    assert (tmp_path / "a/output/f.txt").is_file() and (tmp_path / "b/output/f.txt").is_file()
    assert not (tmp_path / "c/output").exists()
    assert (tmp_path / "runs" / moved / "b/output/f.txt").is_file()  # the archive stays whole


def test_run_ids_sort_by_time():
    assert runs.new_run_id(0) < runs.new_run_id(1) and runs.new_run_id(0).startswith("19700101T000000Z-")


def test_a_linked_folder_stays_linked_and_its_contents_move(tmp_path):
    _fake_run(tmp_path, "r1")
    (tmp_path / "elsewhere").mkdir()
    for log in (tmp_path / "logs").iterdir():
        log.rename(tmp_path / "elsewhere" / log.name)
    (tmp_path / "logs").rmdir()
    (tmp_path / "logs").symlink_to(tmp_path / "elsewhere")
    runs.archive_previous(runs.layout_from_pod(CHAIN, tmp_path))
    assert (tmp_path / "logs").is_symlink() and os.listdir(tmp_path / "elsewhere") == []
    assert (tmp_path / "runs" / "r1" / "logs" / "a.log").is_file()
