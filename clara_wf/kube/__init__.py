"""Every call clara-wf makes to the Kubernetes API, through the official ``kubernetes`` client.

``import kubernetes`` costs a few hundred milliseconds, so this module imports it only
inside functions: importing ``clara_wf.kube`` is free and commands that never talk to a
cluster never pay for it.

What is here:

* ``load_api_client`` / ``probe``: kubeconfig (optionally a named context) or in-cluster
  configuration; a probe that answers within ~2 s whether the current context answers.
* ``Kube``: one namespace of one cluster. Pull secret (``nvcr.io``) get / create /
  replace, Deployment readiness wait (fails fast on image-pull errors), and
  ``watch_job``: the Job's pod and the Job itself are watched (``Watch`` streams that are
  re-listed and resumed after ``410 Gone``), container statuses become ``StageUpdate``
  events, each container's log is followed in its own thread once it starts, image-pull
  and container-config errors end the run at once naming the image, and an overall
  timeout bounds it all.

By concern: ``config`` (kubeconfig, context, probe), ``secrets`` (the pull secret, the
key's redaction), ``errors`` (API failures as one line), ``client`` (``Kube``: secrets,
deployment readiness), ``watch`` (list-and-watch, resumed after 410), ``logs`` (log
following), ``job_watch`` (a Job's stages and logs as events). The names below are the
package's interface.

Errors are raised as ``ClusterError`` with one line for the user. The NGC API key is
never part of a message, a log line or a repr: API error texts that pass through here
are scrubbed of it (and of its base64 forms) before they go into an exception.
"""

from clara_wf.kube.client import Kube
from clara_wf.kube.config import load_api_client, load_configuration, probe
from clara_wf.kube.secrets import PULL_SECRET_NAME, Redactor, dockerconfigjson, set_ngc_api_key, validate_key

__all__ = ["PULL_SECRET_NAME", "Kube", "Redactor", "dockerconfigjson", "load_api_client", "load_configuration",
           "probe", "set_ngc_api_key", "validate_key"]
