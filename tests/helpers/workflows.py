"""Build small test workflows in a project copy: stages with tiny programs, a workflow entry."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Optional

from ruamel.yaml import YAML

from clara_wf import charts
from clara_wf.project import find_project


def add_workflow(project_root: Path, workflow_id: str, programs: Dict[str, List[str]],
                 waits: Optional[List[str]] = None, timeout: str = "60") -> None:
    """Scaffold each stage with `cs`, give it a program, and chain them into a workflow."""
    project = find_project(start=project_root)
    for name in programs:
        if name not in charts.list_stages(project):
            charts.create_stage(project, name)
    yaml = YAML()
    yaml.preserve_quotes = True
    values_file = project.values_file
    data = yaml.load(values_file.read_text())
    names = list(programs)
    for name, argv in programs.items():
        data["stages"][name]["command"] = argv
        data["stages"][name]["timeout"] = timeout
    data["workflows"][workflow_id] = {
        "stages": names,
        "waitLocks": waits if waits is not None else [""] + [f"{n}.lock" for n in names[:-1]],
        "args": [""] * len(names),
    }
    out = io.StringIO()
    yaml.dump(data, out)
    values_file.write_text(out.getvalue())


def python_stage(code: str) -> List[str]:
    return ["python3", "-c", code]
