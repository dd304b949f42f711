"""Where the project is: the clara-workflow chart, the trtis chart and the test data.

The chart is found from the current directory upward (so every command works from any
subfolder of a project), or given explicitly by ``--chart-dir`` / ``CLARA_WF_CHART_DIR``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from clara_wf.errors import ProjectNotFound

CHART_DIR_ENV = "CLARA_WF_CHART_DIR"
WORKFLOW_CHART = Path("charts") / "clara-workflow"
TRTIS_CHART = Path("charts") / "trtis"
STAGES_SUBDIR = Path("templates") / "stages"
TEMPLATE_STAGE = "template"


@dataclass(frozen=True)
class Project:
    root: Path
    chart_dir: Path

    @property
    def stages_dir(self) -> Path:
        return self.chart_dir / STAGES_SUBDIR

    @property
    def template_dir(self) -> Path:
        return self.stages_dir / TEMPLATE_STAGE

    @property
    def values_file(self) -> Path:
        return self.chart_dir / "values.yaml"

    @property
    def stage_values_file(self) -> Path:
        return self.chart_dir / "_stage_values.yaml"

    @property
    def trtis_chart_dir(self) -> Path:
        return self.root / TRTIS_CHART

    @property
    def test_data_dir(self) -> Path:
        return self.root / "test-data"

    @property
    def state_dir(self) -> Path:
        """Run-time state of this project (locks, local Triton pid); never committed."""
        return self.root / ".clara-wf"


def _is_chart(path: Path) -> bool:
    return (path / "Chart.yaml").is_file()


def find_project(chart_dir: Optional[Path] = None, start: Optional[Path] = None) -> Project:
    """Locate the project from an explicit chart folder, the environment, or the cwd upward."""
    explicit = chart_dir or (Path(os.environ[CHART_DIR_ENV]) if os.environ.get(CHART_DIR_ENV) else None)
    if explicit is not None:
        explicit = explicit.expanduser().resolve()
        if not _is_chart(explicit):
            raise ProjectNotFound(f"{explicit} is not a Helm chart (no Chart.yaml there)")
        root = explicit.parent.parent if explicit.parent.name == "charts" else explicit.parent
        return Project(root=root, chart_dir=explicit)

    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_chart(folder / WORKFLOW_CHART):
            return Project(root=folder, chart_dir=folder / WORKFLOW_CHART)
    raise ProjectNotFound(
        f"no {WORKFLOW_CHART}/Chart.yaml in {here} or any folder above it; "
        f"run clara-wf inside a project, or pass --chart-dir / set {CHART_DIR_ENV}"
    )
