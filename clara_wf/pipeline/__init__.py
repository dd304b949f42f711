"""`clara-wf import` (``document`` → ``operators`` → ``convert`` → ``plan``): a Clara pipeline definition becomes stages and a DAG workflow.

A Clara pipeline (api-version 0.4.0 and 0.5.0; 0.3.0 read as 0.4.0) lists operators,
each a container with inputs (``from`` an upstream operator's named output, or the job
payload) and outputs. Importing one:

* scaffolds one stage per operator exactly as ``clara-wf cs`` does
  (:func:`clara_wf.charts.create_stage`), then sets the values the operator defines:
  ``image.repository/tag``, ``command``, ``env`` (its ``variables``), ``resources`` (its
  ``requests``: gpu → limits ``nvidia.com/gpu``, cpu/memory → requests) and
  ``services: ["trtis"]`` for an operator with a ``trtis`` service;
* writes ``workflows.<id>`` in the DAG form: ``stages`` in a topological order,
  ``waitLocks`` derived from the inputs, ``args`` and ``io`` (named inputs and outputs).

Safety: everything is checked (the document, its template parameters, the DAG, names
already taken) before anything is written; the whole change (new stage folders, the new
values.yaml) is computed first, in a scratch copy of the chart, then applied; a failure
while applying restores values.yaml and removes the folders created. values.yaml is
edited as text: only the stage blocks between ``##BEGIN_NAME##``/``##END_NAME##`` and the
workflow's own entry change, every other byte stays. Stages and the workflow entry carry a
``# clara-wf import: pipeline "NAME"`` comment, which is how a re-import knows they are its
own to update; anything else with the same name is refused unless ``force``. Importing the
same file again changes nothing.

The core never prints: warnings (unknown fields, ignored services) and notes go to the
``warn``/``note`` callbacks and are kept on the plan.
"""

from clara_wf.pipeline.document import Operator, Pipeline, parse_set
from clara_wf.pipeline.operators import read_pipeline
from clara_wf.pipeline.plan import ImportPlan, ImportResult, apply_import, import_pipeline, plan_import

__all__ = ["ImportPlan", "ImportResult", "Operator", "Pipeline", "apply_import", "import_pipeline", "parse_set",
           "plan_import", "read_pipeline"]
