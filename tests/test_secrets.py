"""The NGC key never appears in clara-wf's output — in any encoding, whole, cut or wrapped, on
every error path — and no program clara-wf starts inherits it."""

from __future__ import annotations

import base64
import json
import re
import stat
import textwrap

import pytest
from helpers import JOB, helm_binary, run_cli

from clara_wf import redaction
from clara_wf.kube.secrets import REGISTRY_USER, dockerconfigjson

KEY = "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"


def forms(key: str):
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    return [key, b64(key), b64(f"{REGISTRY_USER}:{key}"), dockerconfigjson(key)]


def assert_no_key(text: str, key: str = KEY) -> None:
    """No 12-character slice of any form of the key, whitespace removed (wrapped lines joined)."""
    compact = re.sub(r"\s+", "", text)
    for form in forms(key):
        slices = {form[i:i + 12] for i in range(len(form) - 11)}
        leaked = [s for s in slices if s in compact and not s.startswith("eyJhdXRocyI6")]
        assert not leaked, (leaked[:3], text[:300])


def echoes(key: str):
    """The shapes in which a server, a library or a log has echoed the key back."""
    for form in forms(key):
        yield f"error: {form}"
        yield f"error: {form}"[:120]  # an echo cut to 120 characters
        yield f"value {form[5:40]} rejected"  # a slice
        yield "\n".join(textwrap.wrap(f"data: {form}", 76))  # wrapped at 76 columns, as base64 -w 76
    yield json.dumps({"password": key})
    yield f"1 validation error for Auth\npassword\n  Input should be a valid string [type=string_type, input_value=['pw', '{key[:30]}…'], input_type=list]"


@pytest.fixture
def registered():
    redaction.forget_all()
    redaction.register(KEY)
    yield
    redaction.forget_all()


def test_scrub_removes_every_echo_of_the_key(registered):
    for text in echoes(KEY):
        assert_no_key(redaction.scrub(text))


def test_scrub_keeps_ordinary_text(registered):
    text = "cannot write secret 'nvcr.io' in namespace 'default': HTTP 403 forbidden (base64 aGVsbG8gd29ybGQ=)"
    assert redaction.scrub(text) == text


@pytest.mark.parametrize("kind", ["input", "cluster", "os", "internal", "internal-multiline"])
def test_every_error_path_of_the_cli_prints_one_scrubbed_line(kind, monkeypatch, capsys):
    """The one place that prints errors (cli.main) scrubs them, whatever raised them."""
    from clara_wf import cli, kube
    from clara_wf.errors import ClusterError, InputError

    redaction.forget_all()
    monkeypatch.setenv("NGC_API_KEY", KEY)
    message = " | ".join(echoes(KEY))
    error = {
        "input": InputError(message),
        "cluster": ClusterError(message),
        "os": OSError(5, message),
        "internal": ValueError(message.replace("\n", " ")),
        "internal-multiline": ValueError(message),
    }[kind]

    def fail(**_kwargs):
        raise error

    monkeypatch.setattr(kube, "set_ngc_api_key", fail)
    for verbose in ([], ["--verbose"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*verbose, "setkey"])
        err = capsys.readouterr().err
        assert exit_.value.code in (1, 2)
        assert_no_key(err)
        if not verbose:
            assert len(err.strip().splitlines()) == 1, err
    redaction.forget_all()


def test_a_server_echoing_the_key_in_a_malformed_answer_is_one_scrubbed_line(project, tmp_path):
    """The issue's case: 201 with the key in a malformed field gave a 13-line internal error with the key."""
    from helpers.fake_kube_api import FakeKubeAPI, Json

    with FakeKubeAPI() as api:
        api.serve_secrets()
        api.route("POST", r"/api/v1/namespaces/default/secrets",
                  Json({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": ["pw", KEY]},
                        "data": {".dockerconfigjson": [dockerconfigjson(KEY)]}, "type": {"k": KEY}}, 201))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        result = run_cli("setkey", cwd=project, env={"NGC_API_KEY": KEY, "KUBECONFIG": str(kubeconfig)})
    assert_no_key(result.stdout + result.stderr)
    assert len(result.stderr.strip().splitlines()) <= 1, result.stderr


def test_programs_clara_wf_starts_do_not_inherit_the_key(project, tmp_path):
    """helm (here: a wrapper that records its environment, then runs the real helm) sees no key."""
    seen = tmp_path / "helm-env"
    wrapper = tmp_path / "helm"
    wrapper.write_text(f"#!/bin/sh\nenv > {seen}\nexec {helm_binary()} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    result = run_cli("test", "ai-only", JOB, "--dry-run", cwd=project,
                     env={"NGC_API_KEY": KEY, "CLARA_WF_HELM": str(wrapper)})
    assert result.returncode == 0, result.stderr
    assert seen.is_file()
    env = seen.read_text()
    assert "NGC_API_KEY" not in env
    assert_no_key(env)
    assert_no_key(result.stdout + result.stderr)
