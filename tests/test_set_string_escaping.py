"""Run-time values survive `helm --set-string` unchanged, whatever characters they hold."""

from __future__ import annotations

import pytest
from helpers import by_kind, env_of, job_containers, render_chart

from clara_wf.helm import escape_set_string, set_string_args

pytestmark = pytest.mark.helm

NASTY = [
    "with,comma",
    "{braces}",
    "[brackets]",
    "a=b",
    "dots.in.name",
    "back\\slash",
    "quote's",
    'double "quoted"',
    "spaces in it",
    "all ,=\\.[]{}'\" of them",
    "{",
    "trailing\\",
    "",
]


def test_escape_puts_a_backslash_before_each_special_character():
    assert escape_set_string("a,b=c.d[e]{f}\\g") == "a\\,b\\=c\\.d\\[e\\]\\{f\\}\\\\g"
    assert set_string_args({"job.name": "x,y"}) == ["--set-string", "job.name=x\\,y"]


@pytest.mark.parametrize("value", NASTY)
def test_job_name_comes_out_of_helm_template_unchanged(value):
    docs = render_chart(set_string={"job.name": value, "trtisUri": value})
    env = env_of(job_containers(docs)[0])
    assert env["NVIDIA_CLARA_JOBNAME"] == value
    assert env["NVIDIA_CLARA_TRTISURI"] == value


@pytest.mark.parametrize("folder", ["/home/me/with,comma", "/home/me/{braces}", "/srv/a=b/[x].y", "/tmp/sp ace/'q'\"d\""])
def test_payload_host_path_comes_out_unchanged(folder):
    (pv,) = by_kind(render_chart(set_string={"workflow.payloads.hostPath": folder}), "PersistentVolume")
    assert pv["spec"]["hostPath"]["path"] == folder + "/00000000-0000-0000-0000-000000000000"
