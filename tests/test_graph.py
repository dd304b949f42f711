"""`clara-wf graph`: a workflow's DAG as text, dot, Mermaid and SVG."""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import REPO, assert_one_line_error, run_cli

from clara_wf import graph
from clara_wf.errors import InputError

EXAMPLES = REPO / "examples" / "pipelines"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def fanout(project) -> Path:
    result = run_cli("import", str(EXAMPLES / "fanout-organs.yaml"), cwd=project)
    assert result.returncode == 0, result.stderr
    return project


def test_text_shows_layers_parallel_branches_and_named_outputs(fanout):
    result = run_cli("graph", "fanout-organs", cwd=fanout)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "workflow fanout-organs: 6 stages, 4 layers, 8 edges (from io)",
        "layer 0",
        "  organ-reader  <- payload",
        "layer 1 (in parallel)",
        "  seg-liver     <- organ-reader (volume)",
        "  seg-spleen    <- organ-reader (volume)",
        "  seg-kidney    <- organ-reader (volume)",
        "layer 2",
        "  organ-merger  <- seg-liver (mask), seg-spleen (mask), seg-kidney (mask)",
        "layer 3",
        "  organ-report  <- organ-merger (labels), organ-reader (volume)",
    ]


def test_a_seed_workflow_draws_from_its_wait_locks(project):
    result = run_cli("graph", "ct", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "workflow ct: 4 stages, 4 layers, 3 edges (from waitLocks)",
        "layer 0", "  dicom-reader  <- payload",
        "layer 1", "  recon         <- dicom-reader",
        "layer 2", "  ai-vnet       <- recon",
        "layer 3", "  dicom-writer  <- ai-vnet",
    ]


def test_wait_locks_map_to_the_stage_whose_lock_name_it_is():
    definition = {"stages": ["a", "b", "c", "d"], "waitLocks": ["", "done-a", "done-a", "b.lock, c.lock,x.lock"]}
    dag = graph.build_graph("w", definition, {"a": {"lockName": "done-a"}})
    assert dag.edges == [("a", "b", ""), ("a", "c", ""), ("b", "d", ""), ("c", "d", ""), ("?x.lock", "d", "")]
    assert dag.external == ["?x.lock"]
    assert dag.layers() == [["a", "?x.lock"], ["b", "c"], ["d"]]
    assert "(no stage writes this lock)" in graph.to_text(dag)


def test_io_edges_carry_output_names_and_extra_waits_are_added():
    definition = {
        "stages": ["r", "a", "side", "m"],
        "waitLocks": ["", "", "", "side.lock"],
        "io": {"r": {"inputs": [{"path": "/input"}], "outputs": [{"name": "vol", "path": "/output"}]},
               "a": {"inputs": [{"from": "r", "path": "/input"}], "outputs": [{"name": "seg", "path": "/output"}]},
               "m": {"inputs": [{"from": "a", "name": "seg", "path": "/in"}], "outputs": [{"name": "o", "path": "/o"}]}},
    }
    dag = graph.build_graph("w", definition)
    assert dag.edges == [("r", "a", "vol"), ("a", "m", "seg"), ("side", "m", "")]
    assert dag.payload_readers == ["r"]
    assert dag.layers() == [["r", "side"], ["a"], ["m"]]


def test_a_cycle_is_named():
    dag = graph.build_graph("loop", {"stages": ["a", "b"], "waitLocks": ["b.lock", "a.lock"]})
    with pytest.raises(InputError, match=r"workflow 'loop' has a cycle: a -> b -> a"):
        dag.layers()


def test_dot_and_mermaid(fanout, tmp_path):
    dot = run_cli("graph", "fanout-organs", "--format", "dot", cwd=fanout).stdout
    assert dot.startswith('digraph "fanout-organs" {')
    assert '"organ-reader" -> "seg-liver" [label="volume"];' in dot
    assert '"payload" -> "organ-reader";' in dot
    assert dot.count("->") == 9
    out = tmp_path / "g.mmd"
    result = run_cli("graph", "fanout-organs", "--format", "mermaid", "--output", str(out), cwd=fanout)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Workflow 'fanout-organs' graph (mermaid) is written to: {out}"
    text = out.read_text()
    assert text.startswith("flowchart LR\n")
    assert '  n1 -->|"volume"| n2' in text and text.count("-->") == 9


def test_svg_without_graphviz_is_drawn_by_clara_wf(fanout, tmp_path):
    out = tmp_path / "fanout.svg"
    env = {"PATH": "/usr/bin:/bin"} if not _has_dot("/usr/bin:/bin") else None
    if env is None:
        pytest.skip("Graphviz is installed in /usr/bin; the built-in drawing is tested directly below")
    result = run_cli("graph", "fanout-organs", "--format", "svg", "--output", str(out), cwd=fanout, env=env)
    assert result.returncode == 0, result.stderr
    assert "(drawn by clara-wf)" in result.stdout
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    nodes = [g.get("data-name") for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
    assert sorted(nodes) == sorted(["payload", "organ-reader", "seg-liver", "seg-spleen", "seg-kidney",
                                    "organ-merger", "organ-report"])
    edges = {(p.get("data-from"), p.get("data-to")) for p in root.iter(f"{SVG}path") if p.get("class") == "edge"}
    assert ("seg-kidney", "organ-merger") in edges and ("organ-reader", "organ-report") in edges
    assert len(edges) == 9


def test_builtin_svg_layout_keeps_layers_in_columns():
    dag = graph.build_graph("w", {"stages": ["r", "a", "b", "m"], "waitLocks": ["", "r.lock", "r.lock", "a.lock,b.lock"]})
    root = ET.fromstring(graph.to_svg_builtin(dag))
    x = {}
    for g in root.iter(f"{SVG}g"):
        rect = g.find(f"{SVG}rect")
        x[g.get("data-name")] = float(rect.get("x"))
    assert x["payload"] < x["r"] < x["a"] == x["b"] < x["m"]


def test_svg_uses_graphviz_dot_when_it_is_on_path(fanout, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    # A stand-in for Graphviz: records its arguments and its input (the dot text), answers an SVG.
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$0.args\"\ncat > \"$0.stdin\"\n"
                    "echo '<svg xmlns=\"http://www.w3.org/2000/svg\"><title>from dot</title></svg>'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "g.svg"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("graph", "fanout-organs", "--format", "svg", "-o", str(out), cwd=fanout, env=env)
    assert result.returncode == 0, result.stderr
    assert "(drawn by Graphviz dot)" in result.stdout
    assert "from dot" in out.read_text()
    assert (bin_dir / "dot.args").read_text().strip() == "-Tsvg"
    assert '"seg-liver" -> "organ-merger" [label="mask"];' in (bin_dir / "dot.stdin").read_text()


def test_errors_are_one_line(fanout, tmp_path):
    assert_one_line_error(run_cli("graph", "nope", cwd=fanout), 2, "no workflow 'nope'", "fanout-organs")
    assert_one_line_error(run_cli("graph", "fanout-organs", "--format", "png", cwd=fanout), 2,
                          "'png' is not one of 'text', 'dot', 'mermaid', 'svg'")
    assert_one_line_error(run_cli("graph", "fanout-organs", "--format", "dot", "-o", str(tmp_path / "no" / "g.dot"),
                                  cwd=fanout), 2, "does not exist")


def _has_dot(path: str) -> bool:
    return any((Path(d) / "dot").exists() for d in path.split(os.pathsep))
