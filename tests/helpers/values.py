"""The run-time values a real run passes (``helm install --set-string``), from the one place
the product makes them (``clara_wf.workflow.workflow_set_string``)."""

from __future__ import annotations

from typing import Dict, Iterable

from clara_wf.workflow import workflow_set_string
from helpers.project import JOB


def run_values(workflow_id: str = "ai-only", job_id: str = JOB, *, host_path: str = "/srv/test-data",
               job_name: str = "Test Job", trtis_uri: str = "trtis.default:8000", run_simple: bool = True,
               leave_out: Iterable[str] = ()) -> Dict[str, str]:
    """The ``--set-string`` values of a run; ``leave_out`` drops keys a test sets another way."""
    values = workflow_set_string(workflow_id=workflow_id, job_id=job_id, payloads_host_path=host_path,
                                 trtis_uri=trtis_uri, job_name=job_name, run_simple=run_simple)
    for key in leave_out:
        values.pop(key, None)
    return values
