"""`clara-wf shell STAGE [WORKFLOW] [JOB]`: a shell in exactly the stage's environment.

The stage is planned as the local engine runs it — the chart rendered for the workflow
(or, without one, the stage's one-stage workflow of ``test --stage``), its container's
variables, the pod's paths (under bwrap: ``/app``, ``/app/input`` … for real; without it:
the folder of links standing in for appDir, variables rewritten to host paths) and its
own Python (its environment from requirements.txt) first on PATH — and ``bash`` is
started there instead of the program. Nothing of the job's payload is changed but the
folders the pod mounts, which are created when missing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from clara_wf.errors import InputError
from clara_wf.project import Project
from clara_wf.workflow import DEFAULT_JOB


@dataclass(frozen=True)
class ShellCommand:
    argv: List[str]
    env: Dict[str, str]
    cwd: Optional[Path]
    stage: str
    sandbox: str
    workflow_id: str


def plan_shell(project: Project, stage: str, workflow_id: Optional[str] = None, job_id: str = DEFAULT_JOB, *,
               sandbox: str = "auto", interactive: bool = True,
               progress: Callable[[str], None] = lambda _m: None) -> ShellCommand:
    from clara_wf import workflow as wf
    from clara_wf.engines import local
    from clara_wf.engines.base import RunPlan

    run = wf.plan_run(project, workflow_id or wf.DEFAULT_WORKFLOW, job_id, need_test_data=False,
                      stage=None if workflow_id else stage)
    if stage not in run.stages:
        raise InputError(f"workflow {workflow_id!r} has no stage {stage!r} (its stages: {', '.join(run.stages)})")
    chosen = local.choose_sandbox(sandbox)
    work_dir = project.state_dir / "runs" / run.job_id
    pod = local.job_pod(RunPlan(run=run, sandbox=chosen), run, None)
    (plan,) = [p for p in local.plan_stages(run, pod, work_dir, chosen) if p.name == stage]
    interpreters = local.stage_interpreters([plan], progress)
    if interpreters:
        (plan,) = [p for p in local.plan_stages(run, pod, work_dir, chosen, interpreters) if p.name == stage]
    for _, host in plan.mounts:
        host.mkdir(parents=True, exist_ok=True)
    bash = shutil.which("bash") or "/bin/sh"
    shell = [bash, "--norc", "-i"] if interactive and bash.endswith("bash") else [bash]
    env = local.stage_environment(plan)
    env["PS1"] = f"[clara-wf {stage}] \\w\\$ "
    for key in ("TERM", "COLUMNS", "LINES"):
        if key in os.environ:
            env[key] = os.environ[key]
    env["CLARA_WF_SHELL"] = stage
    if chosen == "bwrap":
        argv, cwd = local.bwrap_argv(dataclasses.replace(plan, argv=shell)), None
    else:
        local.link_app_dir(plan, work_dir / plan.name / "app")
        argv, cwd = shell, plan.cwd
    return ShellCommand(argv=argv, env=env, cwd=cwd, stage=stage, sandbox=chosen, workflow_id=run.workflow_id)
