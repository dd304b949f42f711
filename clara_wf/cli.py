"""The clara-wf command line: parses arguments, calls the core, turns its errors into messages.

(Over 400 lines: one thin function per command, ~16 commands and aliases; each maps options
onto the core. Splitting it per command group is the next step once the command set settles.)

Every core error is one line on stderr (``clara-wf: …``) and an exit code: 2 for bad
usage or input, 1 when an external tool, the cluster or a workflow fails. ``--verbose``
shows each external command and, on error, the traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from clara_wf import __version__, redaction
from clara_wf.errors import ClaraWfError, InputError
from clara_wf.project import CHART_DIR_ENV, Project, find_project
from clara_wf.triton import DEFAULT_RELEASE as TRTIS_RELEASE
from clara_wf.workflow import DEFAULT_JOB, DEFAULT_RELEASE, DEFAULT_WORKFLOW

LIST_HEADER = "clara-wf [command] [arguments...]\n\nCommand List"
LIST_FOOTER = f"""Options: --chart-dir DIR (or {CHART_DIR_ENV}), --verbose, --version.
`clara-wf COMMAND --help` describes a command."""
LIST_COLUMN = 46  # the original's layout: "    names [args]<padding>: summary"


@dataclass(frozen=True)
class Listed:
    """A command as the no-argument command list shows it."""

    names: str  # "list_stages | list | ls"
    args: str  # "[stage name]"
    summary: str
    extra: str = ""  # a second line (the original shows test's default arguments)


_listed: List[Listed] = []


def listed(names: str, args: str, summary: str) -> None:
    """List a command group (``app.add_typer``) in the no-argument command list."""
    _listed.append(Listed(names, args, summary))


def command_list() -> str:
    lines = [LIST_HEADER]
    for entry in _listed:
        left = f"{entry.names} {entry.args}".rstrip()
        lines.append(f"    {left:<{LIST_COLUMN}}: {entry.summary}")
        if entry.extra:
            lines.append(entry.extra)
    return "\n".join(lines + ["", LIST_FOOTER])


class Output(str, Enum):
    text = "text"
    json = "json"


class Sandbox(str, Enum):
    auto = "auto"
    bwrap = "bwrap"
    none = "none"


class GraphFormat(str, Enum):
    text = "text"
    dot = "dot"
    mermaid = "mermaid"
    svg = "svg"


def _engine_choices() -> "type[Enum]":
    """auto plus every engine module of clara_wf/engines (listed without importing them)."""
    from clara_wf import engines

    names = [engines.AUTO, *engines.available()]
    return Enum("Engine", {name: name for name in names}, type=str)  # type: ignore[return-value]


EngineChoice = _engine_choices()


app = typer.Typer(
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Define, test and deploy Clara Deploy workflows (multi-stage medical-imaging AI pipelines) as Helm charts.",
)


@dataclass
class State:
    chart_dir: Optional[Path]
    verbose: bool

    def project(self) -> Project:
        return find_project(self.chart_dir)


def _state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


def echo(message: str = "") -> None:
    typer.echo(message)


def note(message: str) -> None:
    """Progress and status for a person: stderr, so stdout stays parseable."""
    typer.echo(message, err=True)


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    chart_dir: Optional[Path] = typer.Option(
        None, "--chart-dir", envvar=CHART_DIR_ENV, help="The clara-workflow chart folder (default: found from here upward)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show each external command; tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    ctx.obj = State(chart_dir=chart_dir, verbose=verbose)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="[clara-wf] %(message)s", stream=sys.stderr)
    if version:
        echo(f"clara-wf {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        echo(command_list())
        raise typer.Exit(0)


def command(name: str, *aliases: str, help: str, summary: str = "", args: str = "", extra: str = ""):
    """Register a command under its name and the original's aliases (aliases hidden from
    ``--help``), and list it in the no-argument command list with ``summary``."""

    def register(func):
        _listed.append(Listed(" | ".join((name, *aliases)), args, summary or help.rstrip("."), extra))
        alias_note = f" (aliases: {', '.join(aliases)})" if aliases else ""
        app.command(name, help=help + alias_note)(func)
        for alias in aliases:
            app.command(alias, help=f"Alias of {name}: {help}", hidden=True)(func)
        return func

    return register


# --- stages -----------------------------------------------------------------------------


@command("list_stages", "list", "ls", summary="List available stages", help="List the stages of the chart (templates/stages, except template).")
def list_stages(
    ctx: typer.Context,
    output: Output = typer.Option(Output.text, "--output", "-o", help="text (one name a line) or json."),
) -> None:
    from clara_wf import charts

    names = charts.list_stages(_state(ctx).project())
    if output is Output.json:
        echo(json.dumps(names))
    else:
        for name in names:
            echo(name)


@command("create_stage", "create", "cs", args="[stage name]", summary="Create stage", help="Scaffold a stage: its chart templates and values, and its operator app in apps/NAME.")
def create_stage(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Stage name (a DNS-1123 label)."),
    no_app: bool = typer.Option(False, "--no-app", help="Only the chart half: no apps/NAME (main.py, requirements.txt, Dockerfile, env.list)."),
    app_only: bool = typer.Option(False, "--app-only", help="Only apps/NAME, for a stage the chart has already (imported, or made with --no-app)."),
) -> None:
    from clara_wf import scaffold

    project = _state(ctx).project()
    if app_only and no_app:
        raise InputError("--app-only and --no-app exclude each other")
    if app_only:
        target = scaffold.create_app(project, name)
        echo(f"Operator app for Stage '{name}' is created at: {target} (main.py, requirements.txt, Dockerfile, env.list)")
        echo(f"Run it: clara-wf test --stage {name} [JOB]  (input: test-data/JOB/{name}/input)")
        return
    done = scaffold.create_stage(project, name, app=not no_app)
    for line in done.change.notes:
        note(f"note: {line}")
    echo(f"Stage '{name}' is created at: {done.change.stage_dir}")
    echo(f"Default values for Stage '{name}' are added to: {done.change.values_file}")
    if done.app_created:
        echo(f"Operator app for Stage '{name}' is created at: {done.app_dir} "
             "(main.py, requirements.txt, Dockerfile, env.list)")
    elif done.app_created is False:
        echo(f"Operator app for Stage '{name}' is kept as it is: {done.app_dir}")
    if done.app_created is None and not done.app_dir.is_dir():
        echo(f"No operator app (--no-app): set stages.{name}.source and command in values.yaml, "
             f"or run `clara-wf ds {name}` and `clara-wf cs {name}` for one")
        return
    job_input = project.test_data_dir / DEFAULT_JOB / name / "input"
    echo("Next steps:")
    echo(f"  1. Write the stage's code in {_shown(done.app_dir / 'main.py')} "
         f"(its libraries in {_shown(done.app_dir / 'requirements.txt')})")
    echo(f"  2. Put sample input in {_shown(job_input)}/ (another job: test-data/<job UUID>/{name}/input/)")
    echo(f"  3. Run the stage alone: clara-wf test --stage {name} [JOB]")
    echo(f"  4. Add it to a workflow (workflows: in {_shown(done.change.values_file)}), then: clara-wf test WORKFLOW [JOB]")
    echo(f"  5. Build its image: podman build -t {name}:latest -f {_shown(done.app_dir / 'Dockerfile')} {_shown(project.root)}")


def _shown(path: Path) -> str:
    """A path as short as it can be said from here (relative when below the current folder)."""
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


@command("delete_stage", "delete", "ds", args="[stage name]", summary="Delete stage", help="Delete a stage's folder and its values block (and apps/NAME while unchanged from the scaffold).")
def delete_stage(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Stage name."),
    force: bool = typer.Option(False, "--force", "-f", help="Delete even when workflows use the stage."),
) -> None:
    from clara_wf import scaffold

    change, removal = scaffold.delete_stage(_state(ctx).project(), name, force=force)
    for line in change.notes:
        note(f"note: {line}")
    echo(f"Stage '{name}' is deleted from: {change.stage_dir.parent}")
    echo(f"Values for Stage '{name}' are removed from: {change.values_file}")
    if removal.removed:
        echo(f"Operator app for Stage '{name}' is deleted (unchanged from the scaffold): {removal.app_dir}")
    elif removal.why_kept:
        echo(f"Operator app for Stage '{name}' is kept, as {removal.why_kept}: {removal.app_dir}")


# --- test -------------------------------------------------------------------------------


@command("test_workflow", "test", args="[workflow id] [job id]", summary="Test workflow",
         extra=f"                  default args: {DEFAULT_WORKFLOW} {DEFAULT_JOB}", help="Run a workflow on test-data/JOB and show the outcome and the output folder.")
def test_workflow(
    ctx: typer.Context,
    workflow_id: str = typer.Argument(DEFAULT_WORKFLOW, metavar="[WORKFLOW]", help="A key of workflows in values.yaml."),
    job_id: str = typer.Argument(DEFAULT_JOB, metavar="[JOB]", help="The job's UUID; its payload is test-data/JOB."),
    engine: EngineChoice = typer.Option("auto", "--engine", "-e", help="auto: Kubernetes when a context answers, else local; container: the stage images on podman/docker."),  # type: ignore[valid-type]
    dry_run: bool = typer.Option(False, "--dry-run", help="Check everything, print the helm command and the manifests, run nothing."),
    trtis_uri: Optional[str] = typer.Option(None, "--trtis-uri", help="Use this Triton (host:port) instead of starting or installing one."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="Kubernetes namespace."),
    kube_context: Optional[str] = typer.Option(None, "--kube-context", help="Kubernetes context (default: the current one)."),
    release: str = typer.Option(DEFAULT_RELEASE, "--release", help="Helm release name of the workflow."),
    timeout: float = typer.Option(1800, "--timeout", help="Seconds the whole run may take."),
    keep: bool = typer.Option(False, "--keep", help="Kubernetes: keep the releases installed; container: keep the pod and its containers."),
    build: bool = typer.Option(False, "--build", help="Container and Kubernetes: build the stage images first (podman/docker build)."),
    runtime: str = typer.Option("auto", "--runtime", help="Container engine and --build: podman, docker or auto (whichever answers)."),
    base_image: str = typer.Option("auto", "--base-image", help="--build: BASE_IMAGE of the Dockerfiles: auto (the local Debian base when mmdebstrap is installed, else the Dockerfile's default), local, dockerfile or an image."),
    sandbox: Sandbox = typer.Option(Sandbox.auto, "--sandbox", help="Local: bwrap (pod paths for real), none (paths rewritten), auto."),
    output: Output = typer.Option(Output.text, "--output", "-o", help="text (summary table, output folder) or json (the run record)."),
    from_stage: Optional[str] = typer.Option(None, "--from", metavar="STAGE", help="Rerun STAGE and what depends on it, reusing the other stages' outputs of the last successful run (checked against their recorded SHA-256)."),
    only_stage: Optional[str] = typer.Option(None, "--only", metavar="STAGE", help="Rerun STAGE alone, on the outputs its upstream stages recorded in the last successful run."),
    keep_runs: int = typer.Option(3, "--keep-runs", help="Earlier runs kept under test-data/JOB/runs/ (the last successful one is always kept)."),
    clean: bool = typer.Option(False, "--clean", help="Delete the previous run's files instead of moving them to runs/."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Run this stage alone, in no workflow: `test --stage NAME [JOB]` (input: test-data/JOB/NAME/input)."),
    standalone: bool = typer.Option(False, "--standalone", help="With --stage: run it as Clara's operator kit does, with apps/NAME/env.list's variables and NVIDIA_CLARA_NOSYNCLOCK=TRUE."),
    model_repository: Optional[Path] = typer.Option(None, "--model-repository", help="Local: the model repository of the Triton started for the run (default test-data/models)."),
    pause_before: List[str] = typer.Option([], "--pause-before", help="Hold the run before this stage starts until you continue (Enter); repeatable."),
    pause_after: List[str] = typer.Option([], "--pause-after", help="Hold the run once this stage is done until you continue (Enter); repeatable."),
) -> None:
    from clara_wf import workflow as wf
    from clara_wf.display import RunDisplay, output_listing, summary_table
    from clara_wf.errors import WorkflowFailed
    from clara_wf.run import run_test

    # Options first: a wrong one is reported before the project is even looked at.
    wf.check_release_name(release)
    wf.check_namespace(namespace)
    wf.check_seconds(timeout)
    if trtis_uri is not None:
        wf.check_trtis_uri(trtis_uri)
    if stage is not None:
        # `test --stage NAME [JOB]`: the one positional argument is the job.
        given = [a for a in (workflow_id, job_id) if a not in (DEFAULT_WORKFLOW, DEFAULT_JOB)]
        if job_id != DEFAULT_JOB and workflow_id != DEFAULT_WORKFLOW:
            raise InputError(f"--stage runs {stage!r} in no workflow: give only the job (test --stage {stage} [JOB])")
        job_id = given[0] if given else DEFAULT_JOB
    result = run_test(
        _state(ctx).project(), workflow_id, job_id, engine=str(getattr(engine, "value", engine)), dry_run=dry_run, release=release,
        namespace=namespace, kube_context=kube_context, timeout=timeout, keep=keep, build=build, sandbox=sandbox.value,
        trtis_uri=trtis_uri, runtime=runtime, base_image=base_image, display=lambda stages: RunDisplay(stages, stream=sys.stderr), note=note,
        stage=stage, standalone=standalone, pause_before=pause_before, pause_after=pause_after,
        model_repository=model_repository,
        from_stage=from_stage, only_stage=only_stage, keep_runs=keep_runs, clean=clean, defer_teardown=True,
    )
    if result.dry_run is not None:
        if output is Output.json:
            echo(json.dumps({"command": result.dry_run.command, "manifests": result.dry_run.manifests}, indent=2))
            return
        echo("# " + result.dry_run.command)
        echo(result.dry_run.manifests)
        return
    run, outcome = result.run, result.outcome
    try:
        # The outcome first; stopping a Triton this run started comes after (teardown).
        if output is Output.json:
            echo(json.dumps(result.record or {}, indent=2))
        else:
            if result.record:
                echo(summary_table(result.record))
            for output_dir in run.output_folders():
                echo(output_listing(output_dir))
        if outcome is None or not outcome.succeeded:
            raise WorkflowFailed(outcome.message if outcome else "the workflow did not run")
        if output is Output.text and run.stage_only:
            echo(f"Job '{run.job_name}' ({run.job_id}) executed: stage '{run.stage_only}' succeeded"
                 + (" (stand-alone)" if standalone else ""))
        elif output is Output.text:
            echo(f"Job '{run.job_name}' ({run.job_id}) executed: workflow '{run.workflow_id}' succeeded")
        sys.stdout.flush()
    finally:
        if outcome is not None and outcome.teardown is not None:
            outcome.teardown()


@command("logs", args="[workflow] [job] [stage]", summary="Show a run's stage logs (--follow, --run ID)", help="Show a run's stage logs (time-stamped lines); --follow while it runs, --run ID for an earlier run.")
def logs(
    ctx: typer.Context,
    workflow_id: str = typer.Argument(DEFAULT_WORKFLOW, metavar="[WORKFLOW]", help="The workflow whose latest run to show."),
    job_id: str = typer.Argument(DEFAULT_JOB, metavar="[JOB]", help="The job's UUID (test-data/JOB)."),
    stage: Optional[str] = typer.Argument(None, metavar="[STAGE]", help="One stage (default: every stage, merged by time)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
    run_id: Optional[str] = typer.Option(None, "--run", metavar="ID", help="A run id (run.json or test-data/JOB/runs/ID)."),
) -> None:
    import time

    from clara_wf import runs
    from clara_wf import workflow as wf

    wf.check_job_id(job_id)
    job_dir = _state(ctx).project().test_data_dir / job_id
    if not job_dir.is_dir():
        raise InputError(f"no job folder {job_dir}: `clara-wf test {workflow_id} {job_id}` makes one")
    record, found = runs.stage_logs(job_dir, run_id, None if run_id else workflow_id, stage)
    offsets: dict = {}
    while True:
        for line in runs.merged_log_lines(found, offsets):
            echo(line)
        sys.stdout.flush()
        if not follow or record.get("status") != runs.RUNNING:
            return
        time.sleep(0.2)
        current = runs.read_record(job_dir / runs.RECORD_NAME) or {}
        if current.get("run_id") != record.get("run_id"):
            return  # that run is over and was moved away by the next one
        record = current


# --- Triton -----------------------------------------------------------------------------


@command("install_trtis", summary="Deploy TRTIS service", help="Deploy Triton Inference Server (TRTIS) on the cluster, or --local on this machine.")
def install_trtis(
    ctx: typer.Context,
    local: bool = typer.Option(False, "--local", help="Start a CPU Triton server on this machine instead."),
    release: str = typer.Option(TRTIS_RELEASE, "--release", help="Helm release name."),
    namespace: str = typer.Option("default", "--namespace", "-n"),
    kube_context: Optional[str] = typer.Option(None, "--kube-context"),
    timeout: float = typer.Option(600, "--timeout", help="Seconds to wait until Triton is ready."),
    model_repository: Optional[Path] = typer.Option(None, "--model-repository", help="--local: the model repository to serve (default test-data/models)."),
) -> None:
    from clara_wf import workflow as wf

    wf.check_seconds(timeout)
    wf.check_release_name(release)
    wf.check_namespace(namespace)
    project = _state(ctx).project()
    if local:
        from clara_wf.triton import local as triton_local

        instance = triton_local.start(
            project.state_dir, model_repository or project.test_data_dir / "models", progress=note, timeout=timeout
        )
        if instance.already_running:
            echo(f"Triton is already running (pid {instance.pid}): NVIDIA_CLARA_TRTISURI={instance.uri}")
        else:
            echo(f"Triton is ready (pid {instance.pid}): NVIDIA_CLARA_TRTISURI={instance.uri}")
        for entry in triton_local.repository_index(instance.uri):
            if entry["state"] != "READY":
                reason = next((r.strip() for r in entry["reason"].splitlines() if r.strip()), entry["state"])
                note(f"warning: model {entry['name']!r} did not load ({reason}); the others serve "
                     f"(`clara-wf models` lists them; its log: {instance.log})")
        return
    if model_repository is not None:
        raise InputError("--model-repository is for --local; on a cluster, Triton serves /clara/common/models")
    from clara_wf.helm import Helm
    from clara_wf.triton import cluster

    with _or_local("install_trtis --local"):
        uri, already = cluster.install_trtis(
            Helm(), project.trtis_chart_dir, release=release, namespace=namespace,
            kube_context=kube_context, timeout=timeout, on_event=_print_event,
        )
    echo(f"TRTIS {'is already installed' if already else 'is installed'}: NVIDIA_CLARA_TRTISURI={uri}")


@command("uninstall_trtis", summary="Delete TRTIS service", help="Delete the Triton Inference Server release, or --local stop the local one.")
def uninstall_trtis(
    ctx: typer.Context,
    local: bool = typer.Option(False, "--local", help="Stop the Triton server started on this machine."),
    release: str = typer.Option(TRTIS_RELEASE, "--release", help="Helm release name."),
    namespace: str = typer.Option("default", "--namespace", "-n"),
    kube_context: Optional[str] = typer.Option(None, "--kube-context"),
) -> None:
    from clara_wf import workflow as wf

    wf.check_release_name(release)
    wf.check_namespace(namespace)
    project = _state(ctx).project()
    if local:
        from clara_wf.triton import local as triton_local

        stopped = triton_local.stop(project.state_dir)
        echo("Triton stopped" if stopped else "Triton is not running on this machine")
        return
    from clara_wf.helm import Helm
    from clara_wf.triton import cluster

    with _or_local("uninstall_trtis --local"):
        removed = cluster.uninstall_trtis(Helm(), release=release, namespace=namespace, kube_context=kube_context)
    echo(f"TRTIS release '{release}' deleted" if removed else f"TRTIS release '{release}' is not installed")


@contextlib.contextmanager
def _or_local(command: str) -> Iterator[None]:
    """A cluster that is missing or does not answer: setkey's one line, plus the --local way."""
    from clara_wf.errors import ClusterError

    try:
        yield
    except ClusterError as err:
        raise ClusterError(f"{err}; or use `clara-wf {command}` for Triton on this machine") from None


def _print_event(event) -> None:
    text = getattr(event, "text", None) or getattr(event, "detail", None) or str(event)
    note(text)


# --- NGC key ----------------------------------------------------------------------------


@command("set_ngc_api_key", "setkey", summary="Reset NGC API key", help="Create or replace the nvcr.io image pull secret (key from NGC_API_KEY or a prompt).")
def set_ngc_api_key(
    ctx: typer.Context,
    namespace: str = typer.Option("default", "--namespace", "-n"),
    kube_context: Optional[str] = typer.Option(None, "--kube-context"),
) -> None:
    from clara_wf import workflow as wf

    wf.check_namespace(namespace)
    key = redaction.ngc_api_key() or ""
    if not key:
        if not sys.stdin.isatty():
            raise InputError("no NGC API key: set NGC_API_KEY (get one at https://ngc.nvidia.com/configuration/api-key)")
        note("Get NGC API key from https://ngc.nvidia.com/configuration/api-key")
        key = typer.prompt("Then, enter the NGC API key", hide_input=True, default="", show_default=False)
        redaction.register(key)
        redaction.register(key.strip())
        if not key.strip():
            raise InputError("no NGC API key entered")
    from clara_wf import kube

    result = kube.set_ngc_api_key(namespace=namespace, key=key.strip(), kube_context=kube_context)
    echo(f"secret/nvcr.io {result}")


# --- pipelines: import and graph ---------------------------------------------------------


@command("import", args="[pipeline.yaml]", summary="Import a Clara pipeline definition as stages + a workflow",
         help="Import a Clara pipeline definition (YAML): one stage per operator and a DAG workflow.")
def import_pipeline(
    ctx: typer.Context,
    pipeline: Path = typer.Argument(..., help="The pipeline definition (api-version 0.4.0/0.5.0; 0.3.0 read as 0.4.0)."),
    workflow_id: Optional[str] = typer.Option(None, "--workflow-id", help="Workflow id (default: the pipeline's name)."),
    set_values: List[str] = typer.Option([], "--set", help="NAME=value for a ${{NAME}} template parameter (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change (stages, workflow, values.yaml diff); write nothing."),
    force: bool = typer.Option(False, "--force", "-f", help="Take over stages or a workflow of the same name not created by this pipeline's import."),
    sources: List[str] = typer.Option([], "--source", help="OPERATOR=DIR: the folder of an operator's code (its stage's source; default apps/OPERATOR). Repeatable."),
) -> None:
    from clara_wf import charts
    from clara_wf import pipeline as pi

    project = _state(ctx).project()
    plan = pi.import_pipeline(
        project, pipeline, workflow_id=workflow_id, params=pi.parse_set(set_values), force=force, dry_run=dry_run,
        sources=pi.parse_sources(project, sources),
        warn=lambda message: note(f"warning: {message}"), note=lambda message: note(f"note: {message}"),
    )
    wf_id = plan.workflow_id
    verbs = {"create": "is created at", "update": "values are updated in", "unchanged": "is unchanged in"}
    if dry_run:
        echo(f"Dry run: importing {plan.pipeline.path} (pipeline '{plan.pipeline.name}', "
             f"api-version {plan.pipeline.api_version}) would:")
        for stage in plan.stages:
            where = project.stages_dir / stage.name if stage.action == "create" else project.values_file
            echo(f"  {stage.action} stage '{stage.name}' ({where})")
        echo(f"  {plan.workflow_action} workflow '{wf_id}' ({len(plan.definition['stages'])} stages)")
        diff = plan.diff()
        echo(diff.rstrip("\n") if diff else "  (values.yaml unchanged)")
        echo("Nothing was written." if plan.changed else "Nothing would change.")
        return
    for stage in plan.stages:
        where = project.stages_dir / stage.name if stage.action == "create" else project.values_file
        echo(f"Stage '{stage.name}' {verbs[stage.action]}: {where}")
    verb = {"add": "is added to", "update": "is updated in", "unchanged": "is unchanged in"}[plan.workflow_action]
    echo(f"Workflow '{wf_id}' ({len(plan.definition['stages'])} stages) {verb}: {project.values_file}")
    if not plan.changed:
        echo("Nothing changed: the chart already holds this pipeline.")
    for name in plan.trtis_stages:
        echo(f"Stage '{name}' uses Triton (trtis service): `clara-wf install_trtis` provides it on Kubernetes; "
             "`clara-wf test --engine local` starts a local one (trtisUri)")
    for stage in plan.stages:
        source = (charts.stage_values(project).get(stage.name) or {}).get("source")
        if source and not (project.root / str(source)).is_dir():
            echo(f"Stage '{stage.name}' has no code yet: put it in {source}/ "
                 f"(or generate a pass-through operator there: clara-wf cs {stage.name} --app-only)")
    echo(f"Run it: clara-wf test {wf_id} [JOB]  (the job payload's input goes in test-data/JOB/input)")


@command("models", summary="The local Triton's models and their state", help="List the models of the local Triton (or --trtis-uri) and their state; a model that failed to load is named with its error.")
def models(
    ctx: typer.Context,
    trtis_uri: Optional[str] = typer.Option(None, "--trtis-uri", help="Ask this Triton (host:port) instead of the local one."),
    output: str = typer.Option("text", "--output", "-o", help="text or json."),
) -> None:
    from clara_wf.triton import local as triton_local

    if output not in ("text", "json"):
        raise InputError(f"--output must be text or json, not {output!r}")
    uri = trtis_uri
    if uri is None:
        instance = triton_local.status(_state(ctx).project().state_dir)
        if instance is None:
            raise InputError("no local Triton is running: start one with `clara-wf install_trtis --local "
                             "[--model-repository DIR]`, or pass --trtis-uri HOST:PORT")
        uri = instance.uri
    entries = triton_local.repository_index(uri)
    if output == "json":
        echo(json.dumps(entries))
        return
    if not entries:
        echo(f"Triton at {uri} has no models in its repository")
        return
    width = max(len(e["name"]) for e in entries)
    for e in entries:
        line = f"{e['name']:<{width}}  {e['version'] or '-':<3}  {e['state']}"
        reason = next((r.strip() for r in e["reason"].splitlines() if r.strip()), "")
        echo(line + (f": {reason}" if reason and e["state"] != "READY" else ""))


@command("shell", args="[stage] [workflow id] [job id]", summary="A shell in a stage's environment (its variables, paths, Python)", help="Open a shell in exactly a stage's environment (its variables, the pod's paths, its Python).")
def shell(
    ctx: typer.Context,
    stage: str = typer.Argument(..., help="The stage."),
    workflow_id: Optional[str] = typer.Argument(None, metavar="[WORKFLOW]", help="A workflow holding the stage (default: the stage alone, as test --stage)."),
    job_id: str = typer.Argument(DEFAULT_JOB, metavar="[JOB]", help="The job whose payload folders are mounted."),
    sandbox: str = typer.Option("auto", "--sandbox", help="bwrap (pod paths for real), none (paths rewritten), auto."),
) -> None:
    from clara_wf import external, stage_shell

    interactive = sys.stdin.isatty()
    command = stage_shell.plan_shell(_state(ctx).project(), stage, workflow_id, job_id, sandbox=sandbox,
                                     interactive=interactive, progress=note)
    if interactive:
        note(f"shell in stage '{stage}' of workflow '{command.workflow_id}' ({command.sandbox}); `exit` leaves it")
    proc = external.start(command.argv, env=command.env, cwd=command.cwd, stdin=None)
    raise typer.Exit(proc.wait())


workflow_app = typer.Typer(help="List, show and remove the workflows of values.yaml (every other byte is kept).",
                            no_args_is_help=True)
app.add_typer(workflow_app, name="workflow")
listed("workflow", "list | show ID | remove ID", "The workflows of values.yaml")


@workflow_app.command("list", help="The workflows: id, form, stages; missing stages marked.")
def workflow_list(
    ctx: typer.Context,
    output: str = typer.Option("text", "--output", "-o", help="text or json."),
) -> None:
    from clara_wf import workflows

    if output not in ("text", "json"):
        raise InputError(f"--output must be text or json, not {output!r}")
    infos = workflows.list_workflows(_state(ctx).project())
    if output == "json":
        echo(json.dumps([{"id": i.workflow_id, "form": i.form, "stages": i.stages, "missing": i.missing,
                          "default": i.default} for i in infos]))
        return
    width = max((len(i.workflow_id) for i in infos), default=0)
    for i in infos:
        stages = ", ".join(f"{s} (missing)" if s in i.missing else s for s in i.stages)
        echo(f"{i.workflow_id:<{width}}  {i.form:<4}  {stages}{'  [default]' if i.default else ''}")


@workflow_app.command("show", help="One workflow's entry, exactly as values.yaml writes it, and its missing stages.")
def workflow_show(ctx: typer.Context, workflow_id: str = typer.Argument(..., metavar="WORKFLOW")) -> None:
    from clara_wf import workflows

    info, text = workflows.show_workflow(_state(ctx).project(), workflow_id)
    typer.echo(text, nl=not text.endswith("\n"))
    if info.missing:
        note(f"missing stage(s): {', '.join(info.missing)} (`clara-wf cs NAME` scaffolds one)")


@workflow_app.command("remove", help="Remove a workflow from values.yaml, keeping every other byte.")
def workflow_remove(
    ctx: typer.Context,
    workflow_id: str = typer.Argument(..., metavar="WORKFLOW"),
    force: bool = typer.Option(False, "--force", "-f", help="Remove it even when it is the chart's default (workflow.id)."),
) -> None:
    from clara_wf import workflows

    project = _state(ctx).project()
    for line in workflows.remove_workflow(project, workflow_id, force=force):
        note(f"note: {line}")
    echo(f"Workflow '{workflow_id}' is removed from: {project.values_file}")


@command("graph", args="[workflow id]", summary="Draw a workflow's stages (text, dot, mermaid, svg)", help="Show a workflow's DAG: text in the terminal, or --format dot|mermaid|svg --output FILE.")
def graph_workflow(
    ctx: typer.Context,
    workflow_id: str = typer.Argument(..., metavar="WORKFLOW", help="A key of workflows in values.yaml."),
    fmt: GraphFormat = typer.Option(GraphFormat.text, "--format", help="How to draw it."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    from clara_wf import graph

    dag = graph.load_graph(_state(ctx).project(), workflow_id)
    text, how = graph.render(dag, fmt.value)
    if output is None:
        typer.echo(text, nl=False)
        return
    graph.write_output(text, output)
    drawn = f" (drawn by {'Graphviz dot' if how == 'graphviz' else 'clara-wf'})" if fmt is GraphFormat.svg else ""
    echo(f"Workflow '{workflow_id}' graph ({fmt.value}){drawn} is written to: {output}")


# --- DICOM adapter -----------------------------------------------------------------------

dicom_app = typer.Typer(no_args_is_help=True, help="The DICOM adapter: a Storage SCP that runs a workflow per study.")
app.add_typer(dicom_app, name="dicom-adapter")
listed("dicom-adapter", "serve", "Receive studies over DICOM, run a workflow per study, send results")


def _adapter_state_dir(ctx: typer.Context, state_dir: Optional[Path]) -> Path:
    return state_dir if state_dir is not None else _state(ctx).project().state_dir / "dicom-adapter"


@dicom_app.command("serve", help="Receive studies (C-STORE), run the workflow per study, send the results (C-STORE/STOW-RS).")
def dicom_adapter_serve(
    ctx: typer.Context,
    config_file: Optional[Path] = typer.Option(None, "--config", "-c", help="Full configuration (YAML): sources, AE titles, workflows, destinations."),
    ae_title: Optional[str] = typer.Option(None, "--ae-title", help="Our AE title (default CLARA)."),
    port: Optional[int] = typer.Option(None, "--port", "-p", help="DICOM port (default 104 as root, else 11112)."),
    workflows: List[str] = typer.Option([], "--workflow", "-w", help="Workflow to run per study (repeatable)."),
    destinations: List[str] = typer.Option([], "--destination", "-d", help="AE@HOST:PORT to send results to (repeatable)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds without a new instance that complete a study (default 5)."),
    engine: Optional[str] = typer.Option(None, "--engine", "-e", help="local (default), kubernetes or auto."),
    grouping: Optional[str] = typer.Option(None, "--grouping", help="StudyInstanceUID (default) or SeriesInstanceUID."),
    bind: str = typer.Option("", "--bind", help="Address to listen on (default: every interface)."),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="Received files, jobs and payloads (default .clara-wf/dicom-adapter)."),
    job_timeout: float = typer.Option(3600, "--job-timeout", help="Seconds one workflow run may take."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="Kubernetes engine: namespace."),
    kube_context: Optional[str] = typer.Option(None, "--kube-context", help="Kubernetes engine: context."),
    trtis_uri: Optional[str] = typer.Option(
        None, "--trtis-uri", help="A running Triton (host:port) for every job, instead of one started or installed per job."),
    payloads_host_path: Optional[str] = typer.Option(
        None, "--payloads-host-path",
        help="Kubernetes engine: the node path of STATE_DIR/payloads (workflow.payloads.hostPath of each job)."),
) -> None:
    import threading
    import time

    from clara_wf import dag, values_edit
    from clara_wf import workflow as wf
    from clara_wf.dicom import config as cfg
    from clara_wf.dicom.service import Adapter
    from clara_wf.dicom.store import Store

    project = _state(ctx).project()
    if config_file is not None:
        quick = [flag for flag, value in (("--ae-title", ae_title), ("--workflow", workflows), ("--destination", destinations),
                                          ("--timeout", timeout), ("--grouping", grouping)) if value]
        if quick:
            raise InputError(f"--config and {quick[0]} do not go together: put it in the configuration file")
        config = cfg.load(config_file, port=port, engine=engine, trtis_uri=trtis_uri)
    else:
        config = cfg.from_flags(ae_title=ae_title or cfg.DEFAULT_AE_TITLE, port=port, workflows=workflows,
                                destinations=destinations, timeout=cfg.DEFAULT_TIMEOUT_S if timeout is None else timeout,
                                engine=engine or "local", grouping=grouping or "StudyInstanceUID", bind_address=bind,
                                trtis_uri=trtis_uri)
    if job_timeout <= 0:
        raise InputError(f"--job-timeout must be a number of seconds > 0, not {job_timeout:g}")
    cfg.check_workflows(config, dag.workflow_ids(values_edit.read_values(project.values_file)), project.values_file)
    for workflow_id in config.workflows():  # stages, values and graph checked now, not at the first study
        wf.plan_run(project, workflow_id, wf.DEFAULT_JOB, need_test_data=False)

    lock = threading.Lock()

    def log(message: str) -> None:
        with lock:
            note(f"{time.strftime('%H:%M:%S')} {message}")

    adapter = Adapter(project, config, Store(_adapter_state_dir(ctx, state_dir)), log=log, job_timeout=job_timeout,
                      namespace=namespace, kube_context=kube_context, payloads_host_path=payloads_host_path)
    try:
        try:
            bound = adapter.start()
        except OSError as err:
            from clara_wf.errors import ClaraWfError

            raise ClaraWfError(f"cannot listen on port {config.port}: {err.strerror or err}") from None
        for ae in config.called.values():
            where = ", ".join(config.destinations[d].describe() for d in ae.destinations) or "nowhere (results stay in the payload)"
            log(f"AE title {ae.ae_title}: workflows {', '.join(ae.workflows)}, grouped by {ae.grouping}, "
                f"{ae.timeout:g} s inactivity timeout, results to {where}")
        log(f"DICOM adapter listening on port {bound} (state in {adapter.store.root}; engine {adapter.engine}); "
            "Ctrl-C stops it")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log("stopping: what is not finished resumes at the next start")
    finally:
        adapter.stop()


jobs_app = typer.Typer(help="The DICOM adapter's jobs: `clara-wf jobs` lists them, `clara-wf jobs show ID` shows one.")
app.add_typer(jobs_app, name="jobs")
listed("jobs", "[show ID]", "The DICOM adapter's jobs")


@jobs_app.callback(invoke_without_command=True)
def jobs_list(
    ctx: typer.Context,
    output: str = typer.Option("text", "--output", "-o", help="text or json."),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="The adapter's state folder (default .clara-wf/dicom-adapter)."),
) -> None:
    ctx.obj = {"state_dir": state_dir}
    if ctx.invoked_subcommand is not None:
        return
    from clara_wf.dicom import listing
    from clara_wf.dicom.store import Store

    if output not in ("text", "json"):
        raise InputError(f"--output must be text or json, not {output!r}")
    rows = listing.rows(Store(_adapter_state_dir(ctx, state_dir)))
    echo(json.dumps(rows, indent=2) if output == "json" else listing.table(rows))


@jobs_app.command("show", help="One job: its study, workflow, times, run record and export results.")
def jobs_show(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="The job's id (or an unambiguous start of it)."),
    output: str = typer.Option("text", "--output", "-o", help="text or json."),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="The adapter's state folder."),
) -> None:
    from clara_wf.dicom import listing
    from clara_wf.dicom.store import Store

    if output not in ("text", "json"):
        raise InputError(f"--output must be text or json, not {output!r}")
    parent = (ctx.parent.obj or {}) if ctx.parent else {}
    store = Store(_adapter_state_dir(ctx, state_dir or parent.get("state_dir")))
    item = listing.detail(store, store.find_job(job_id))
    echo(json.dumps(item, indent=2) if output == "json" else listing.describe(item))


# --- entry point ------------------------------------------------------------------------


class _Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP: stop like Ctrl-C, so every stage and a Triton we started are stopped."""


_signal_received: List[int] = []


def _stop_on(signum, frame) -> None:
    _signal_received.append(signum)
    raise _Terminated(signum)


def _say(message: str) -> None:
    """The one place clara-wf prints an error: one line, secrets scrubbed (in any encoding)."""
    lines = [line for line in redaction.scrub(message).splitlines() if line.strip()] or [message]
    first = lines[0]
    if len(lines) > 1:
        first += " …"
    print(f"clara-wf: {first}", file=sys.stderr)


def _traceback() -> None:
    import traceback

    print(redaction.scrub(traceback.format_exc()), file=sys.stderr, end="")


def main(argv: Optional[List[str]] = None) -> None:
    import signal

    from click import exceptions as click_errors

    redaction.take_from_environment()  # no child inherits the key; every error line is scrubbed of it
    cli = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("--verbose", "-v") for a in args[: args.index("--") if "--" in args else len(args)])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on)
    try:
        code = cli.main(args=args, prog_name="clara-wf", standalone_mode=False)
    except ClaraWfError as err:
        if verbose:
            _traceback()
        _say(str(err))
        sys.exit(err.exit_code)
    except click_errors.UsageError as err:
        hint = f" (see `clara-wf {err.ctx.info_name} --help`)" if err.ctx and err.ctx.parent else " (see `clara-wf --help`)"
        _say(f"{err.format_message()}{hint}")
        sys.exit(2)
    except click_errors.ClickException as err:
        _say(err.format_message())
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("clara-wf: interrupted", file=sys.stderr)
        sys.exit(128 + _signal_received[0] if _signal_received else 130)
    except OSError as err:  # the file system said no (permissions, a full disk, ...): not a bug of ours
        where = f"{err.filename}: " if err.filename else ""
        if verbose:
            _traceback()
        _say(f"{where}{err.strerror or err}")
        sys.exit(1)
    except Exception as err:  # a bug of ours: still one line, the traceback on request
        if verbose:
            _traceback()
        text = redaction.scrub(str(err)).strip().splitlines() or [""]
        more = " …" if len(text) > 1 else ""
        _say(f"internal error: {type(err).__name__}: {text[0]}{more} (run with --verbose for the traceback)")
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C (and our SIGTERM/SIGHUP) into exit 130 before we see it
        print("clara-wf: interrupted", file=sys.stderr)
        code = 128 + _signal_received[0] if _signal_received else 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
