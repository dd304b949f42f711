"""clara_payload: NVIDIA_CLARA_INPUTPATHS/OUTPUTPATHS parsing and the chart-derived fallback."""

from __future__ import annotations

import subprocess
import textwrap

import pytest
from runner_helpers import PY, clean_env

from clara_wf.payload import ClaraPayload, PayloadEntry, PayloadError, clara_payload, parse_paths


def entries(value):
    return [(e.name, e.path) for e in parse_paths(value, "NVIDIA_CLARA_INPUTPATHS")]


@pytest.mark.parametrize("value,expected", [
    ("payload:/input", [("payload", "/input")]),
    # Seed 000's form: the job payload plus an upstream operator's output.
    ("payload:/input;up-op/out:/input1", [("payload", "/input"), ("up-op/out", "/input1")]),
    ("", []),
    ("  ", []),
    ("a:/x;", [("a", "/x")]),  # trailing separator
    (";;a:/x;;b:/y;", [("a", "/x"), ("b", "/y")]),  # empty items
    (" a : /x ; b:/y ", [("a", "/x"), ("b", "/y")]),  # spaces around items and parts
    ("a:/x:y", [("a", "/x:y")]),  # split at the first ':' only
    ("a:/with space/in", [("a", "/with space/in")]),
    ("op1/seg-out:relative/dir", [("op1/seg-out", "relative/dir")]),
])
def test_parse_paths(value, expected):
    assert entries(value) == expected


@pytest.mark.parametrize("value,message", [
    ("payload", "entry 'payload' has no ':'"),
    ("payload=/input", "entry 'payload=/input' has no ':'"),
    ("a:/x;b", "entry 'b' has no ':'"),
    (":/x", "entry ':/x' has an empty name"),
    ("a:", "entry 'a:' has an empty path"),
    ("a:  ", "entry 'a:' has an empty path"),
    ("a:/x;a:/y", "name 'a' appears twice"),
])
def test_parse_paths_errors_name_the_variable(value, message):
    with pytest.raises(PayloadError) as err:
        parse_paths(value, "NVIDIA_CLARA_OUTPUTPATHS")
    assert str(err.value).startswith("NVIDIA_CLARA_OUTPUTPATHS: ")
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_entries_have_name_and_path():
    env = {"NVIDIA_CLARA_INPUTPATHS": "payload:/input;operator1/segmentation-output:/input1",
           "NVIDIA_CLARA_OUTPUTPATHS": "operator2/final-output:/output"}
    p = ClaraPayload(env)
    assert [(e.name, e.path) for e in p.input_entries] == [("payload", "/input"),
                                                          ("operator1/segmentation-output", "/input1")]
    out = p.output_entries[0]
    assert out.name == "operator2/final-output" and out.path == "/output"
    assert out == PayloadEntry("operator2/final-output", "/output")


def test_derived_from_chart_variables_when_paths_are_absent():
    env = {"NVIDIA_CLARA_APPDIR": "/app", "NVIDIA_CLARA_INPUTS": "input/recon.mhd",
           "NVIDIA_CLARA_OUTPUTS": "output/recon.seg.mhd", "NVIDIA_CLARA_STAGENAME": "ai-vnet"}
    p = ClaraPayload(env)
    assert p.input_entries == [PayloadEntry("payload", "/app/input/recon.mhd")]
    assert p.output_entries == [PayloadEntry("ai-vnet/output", "/app/output/recon.seg.mhd")]
    # Empty INPUTPATHS counts as absent; a set one wins over the chart variables.
    env["NVIDIA_CLARA_INPUTPATHS"] = ""
    assert p.input_entries == [PayloadEntry("payload", "/app/input/recon.mhd")]
    env["NVIDIA_CLARA_INPUTPATHS"] = "payload:/elsewhere"
    assert p.input_entries == [PayloadEntry("payload", "/elsewhere")]


def test_derived_edge_cases():
    assert ClaraPayload({}).input_entries == [] and ClaraPayload({}).output_entries == []
    p = ClaraPayload({"NVIDIA_CLARA_INPUTS": "/data/in", "NVIDIA_CLARA_OUTPUTS": "/data//out/"})
    assert p.input_entries == [PayloadEntry("payload", "/data/in")]  # absolute kept, no APPDIR needed
    assert p.output_entries == [PayloadEntry("output", "/data/out")]  # no STAGENAME: plain "output"
    with pytest.raises(PayloadError, match="NVIDIA_CLARA_INPUTS='in' is relative to NVIDIA_CLARA_APPDIR, which is not set"):
        ClaraPayload({"NVIDIA_CLARA_INPUTS": "in"}).input_entries
    with pytest.raises(PayloadError, match="NVIDIA_CLARA_APPDIR must be an absolute path, got 'app'"):
        ClaraPayload({"NVIDIA_CLARA_APPDIR": "app", "NVIDIA_CLARA_OUTPUTS": "out"}).output_entries


def test_malformed_value_fails_where_used_not_at_import():
    env = clean_env()
    env["NVIDIA_CLARA_INPUTPATHS"] = "broken"
    env["NVIDIA_CLARA_OUTPUTPATHS"] = "x:/out"
    code = textwrap.dedent("""
        from clara_wf.payload import clara_payload, PayloadError
        print(clara_payload.output_entries[0].path)
        try:
            clara_payload.input_entries
        except PayloadError as e:
            print(e)
    """)
    out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out == "/out\nNVIDIA_CLARA_INPUTPATHS: entry 'broken' has no ':' (expected name:path;name:path)\n"


def test_global_reads_the_live_environment(monkeypatch):
    monkeypatch.setenv("NVIDIA_CLARA_INPUTPATHS", "payload:/one")
    assert clara_payload.input_entries == [PayloadEntry("payload", "/one")]
    monkeypatch.setenv("NVIDIA_CLARA_INPUTPATHS", "payload:/two")
    assert clara_payload.input_entries[0].path == "/two"
