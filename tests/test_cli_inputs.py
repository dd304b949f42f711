"""Options are checked before anything else: each bad one is one line, exit 2, nothing done."""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error, run_cli, tree_digest

BAD_OPTIONS = [
    (["test", "ai-only", "--timeout", "nan", "--dry-run"], "--timeout must be a number of seconds > 0"),
    (["test", "ai-only", "--timeout", "inf", "--dry-run"], "--timeout must be a number of seconds > 0"),
    (["test", "ai-only", "--timeout", "-1", "--dry-run"], "--timeout must be a number of seconds > 0"),
    (["install_trtis", "--local", "--timeout", "-5"], "--timeout must be a number of seconds > 0"),
    (["install_trtis", "--local", "--timeout", "nan"], "--timeout must be a number of seconds > 0"),
    (["test", "ai-only", "--namespace", "a b", "--dry-run"], "invalid namespace 'a b'"),
    (["setkey", "--namespace", "a b"], "invalid namespace 'a b'"),
    (["install_trtis", "--namespace", "Upper"], "invalid namespace 'Upper'"),
    (["uninstall_trtis", "--namespace", "-x-"], "invalid namespace '-x-'"),
    (["test", "ai-only", "--trtis-uri", "not a uri", "--engine", "local"], "--trtis-uri 'not a uri' is not host:port"),
    (["test", "ai-only", "--trtis-uri", "localhost:99999", "--engine", "local"], "is not host:port"),
    (["test", "ai-only", "--trtis-uri", "http://h:80/x y", "--engine", "local"], "is not host:port"),
    (["test", "ai-only", "--release", "Bad_Name"], "invalid release name"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_one_line_before_anything_runs(project, args, message):
    before = tree_digest(project)
    assert_one_line_error(run_cli(*args, cwd=project, env={"KUBECONFIG": "/nonexistent"}), 2, message)
    assert tree_digest(project) == before


def test_good_trtis_uris_pass_the_check():
    from clara_wf.workflow import check_trtis_uri

    for uri in ("localhost:8000", "trtis.default:8000", "10.0.0.1:8001", "http://trtis:8000", "[::1]:8000"):
        assert check_trtis_uri(uri) == uri
