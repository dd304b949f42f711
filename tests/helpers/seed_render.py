"""Render every seed-form workflow (golden files for the DAG change's byte-identity test).

`python tests/seed_render.py` rewrites tests/golden/*.yaml; do that only for a change
that is meant to alter the seed workflows' manifests, and say so in the commit.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
SEED_WORKFLOWS = ["ct", "ai", "dicom-reader-only", "ai-only", "recon-only", "dicom-writer-only"]
EXTRA_STAGES = ["dicom-reader", "recon", "ai-livertumor", "dicom-writer"]
RUN = [
    "runSimple=TRUE", "workflow.payloads.hostPath=/srv/test-data", "job.id=00000000-0000-0000-0000-000000000000",
    "job.name=Test Job", "trtisUri=trtis.default:8000", "dicomAdapter.input=", "dicomAdapter.output=",
]


def render_all(helm: str) -> dict:
    from clara_wf import charts
    from clara_wf.project import find_project

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "charts", root / "charts")
        project = find_project(start=root)
        for name in EXTRA_STAGES:
            if not (project.chart_dir / "templates" / "stages" / name).is_dir():
                charts.create_stage(project, name)
        out = {}
        for workflow in SEED_WORKFLOWS:
            argv = [helm, "template", "test-wf", str(project.chart_dir), "--namespace", "default"]
            for pair in RUN + [f"workflow.id={workflow}"]:
                argv += ["--set-string", pair]
            out[workflow] = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return out


if __name__ == "__main__":
    from clara_wf.external import find_program

    GOLDEN.mkdir(exist_ok=True)
    for workflow, text in render_all(find_program("helm", "CLARA_WF_HELM")).items():
        (GOLDEN / f"{workflow}.yaml").write_text(text)
        print(f"wrote {GOLDEN / (workflow + '.yaml')}")
