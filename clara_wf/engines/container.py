"""The container engine: run a workflow's pod from its real stage images (podman or docker).

The chart is rendered with real ``helm template`` as for the other engines and the Job's
pod spec says what to run. Its containers run as one pod (``clara_wf.containers.pod``):
each with its image, command, args, env, working dir and the payload mounts (``subPath``
→ ``test-data/JOB/<subPath>``), all started at once; the stage runner inside each image
sequences them through the lock files, as in the cluster. The engine streams each
container's output with the stage's name, follows the lock files for the stage states,
fails fast (the runner's failure marker stops the stages downstream), and stops and
removes the pod and its containers on success, failure, Ctrl-C or SIGTERM (``--keep``
keeps them).

Triton: the pod shares the host's network, so a Triton on this machine (the local one
the local engine starts, or ``--trtis-uri``) is reached at the same URI.
"""

from __future__ import annotations

import contextlib
import time
from typing import Dict, List, Optional

from clara_wf import engines, interrupts, rendering
from clara_wf.containers import pod as pods
from clara_wf.containers.build import StageBuild, stage_builds
from clara_wf.containers.runtime import Runtime, find_runtime
from clara_wf.engines import local
from clara_wf.engines.base import RunPlan
from clara_wf.errors import InputError
from clara_wf.events import EventSink, Info, JobOutcome


class ContainerEngine:
    """Each container of the workflow's pod from its image, on podman or docker."""

    name = "container"
    uses_images = True

    def run(self, plan: RunPlan, sink: EventSink) -> JobOutcome:
        return run_workflow(plan, sink)

    def planned_trtis_uri(self, plan: RunPlan) -> Optional[str]:
        return None  # as the local engine: the local Triton's address is known once it is up


engines.register(ContainerEngine())


def check_images(runtime: Runtime, specs: List[pods.ContainerSpec], builds: List[StageBuild]) -> None:
    """Every stage image is in the runtime's store (nothing is pulled), else one line saying how to build it."""
    how = {b.stage: b for b in builds}
    images = sorted({spec.image for spec in specs})
    if runtime.run("image", "inspect", "--format", "{{.Id}}", *images, what=f"{runtime.name} image inspect",
                   ok_codes=range(256)).exit_code == 0:
        return  # one call for all: each inspect costs ~0.1 s
    for spec in specs:
        if runtime.image_exists(spec.image):
            continue
        build = how.get(spec.stage)
        if build is not None:
            hint = f"build it: clara-wf test --engine container --build (or {build.command(runtime.name)})"
        else:
            hint = f"build or load it into {runtime.name} (stages.{spec.stage}.build names no build context)"
        raise InputError(f"stage {spec.stage!r}: image {spec.image} is not in {runtime.name}'s local images; {hint}")


def run_workflow(plan: RunPlan, on_event: EventSink, helm=None, runtime: Optional[Runtime] = None) -> JobOutcome:
    """Run the workflow's pod on a container runtime; the outcome says which stage failed, if any.

    The caller holds the job's lock and keeps the run record (``clara_wf.run.run_test``).
    """
    run = plan.run
    started = time.monotonic()
    timings: Dict[str, object] = {}
    runtime = runtime or find_runtime(plan.runtime)
    on_event(Info(f"container runtime: {runtime.name} ({runtime.binary})"))
    t0 = time.monotonic()
    work_dir = run.project.state_dir / "runs" / run.job_id
    pod_spec = rendering.job_pod_spec(rendering.render_documents(run, release=plan.release, helm=helm))
    specs = pods.container_specs(pod_spec, run.job_dir)
    timings["render_s"] = time.monotonic() - t0
    check_images(runtime, specs, stage_builds(run, strict=False))
    swept = pods.sweep_orphans(runtime)
    if swept:
        on_event(Info(f"removed what killed runs left behind: {', '.join(swept)}"))
    # The host's view of each container (lock and log files, mounts): the local engine's
    # plan with the pod's own paths (as under bwrap), which the runner inside each image uses.
    host_plans = local.plan_stages(run, pod_spec, work_dir, "bwrap")
    local.check_payload_inputs(run, host_plans, pod_spec)

    with local.stage_triton(plan, on_event, timings) as run:
        if run is not plan.run:  # the stages get the Triton URI: render again with it
            t0 = time.monotonic()
            pod_spec = rendering.job_pod_spec(rendering.render_documents(run, release=plan.release, helm=helm))
            specs = pods.container_specs(pod_spec, run.job_dir)
            timings["render_s"] = float(timings["render_s"]) + time.monotonic() - t0  # type: ignore[arg-type]
        by_stage = {spec.stage: spec for spec in specs}
        pod = pods.Pod(runtime, run.job_id, keep=plan.keep)
        interrupted = True
        try:
            t0 = time.monotonic()
            pod.create()
            timings["pod_create_s"] = time.monotonic() - t0
            on_event(Info(f"pod {pod.name}: {len(specs)} container(s) from "
                          f"{', '.join(sorted({s.image for s in specs}))}"))
            outcome = local.run_stages(host_plans, work_dir, "bwrap", plan.timeout, on_event, timings,
                                       launch=lambda host_plan: pod.start(by_stage[host_plan.name]))
            interrupted = False
        finally:
            _tear_down(pod, plan.keep, interrupted, on_event, timings)
    timings["total_s"] = time.monotonic() - started
    outcome.timings = timings
    return outcome


def _tear_down(pod: pods.Pod, keep: bool, interrupted: bool, on_event: EventSink, timings: Dict[str, object]) -> None:
    """Remove the pod and its containers (``--keep``: stop what still runs, keep them)."""
    t0 = time.monotonic()
    with interrupts.deferred():  # a second Ctrl-C must not cut the clean-up in half
        if keep:
            if interrupted:
                pod.stop()
            message = f"kept pod {pod.name} and its containers ({pod.runtime.name} ps -a --filter label=io.clara-wf.run={pod.name})"
        else:
            pod.remove()
            message = ""
    timings["teardown_pod_s"] = time.monotonic() - t0
    if message:
        with contextlib.suppress(Exception):  # the display may be gone (a closed pipe, Ctrl-C)
            on_event(Info(message))
