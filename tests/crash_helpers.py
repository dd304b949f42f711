"""Kill clara-wf with SIGKILL at a chosen file-system step, to test what the next command finds.

The command runs in a child process with an audit hook (PEP 578) that counts the
file-system events Python raises (open, rename, remove, mkdir, rmtree, chmod, mkstemp...)
once the chart lock is taken, and sends itself SIGKILL just before the k-th. k = 1, 2, …
walks through every step of the edit: before the journal, between the journal and the
renames, between the renames and the values.yaml write, before the journal is removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

_CHILD = r"""
import os, signal, sys
crash_at = int(os.environ["CLARA_WF_CRASH_AT"])
WATCH = {"open", "os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir", "os.mkdir", "os.chmod",
         "shutil.rmtree", "tempfile.mkstemp", "tempfile.mkdtemp", "os.truncate"}
state = {"armed": False, "count": 0}
import jinja2, jinja2.sandbox, ruamel.yaml, ruamel.yaml.nodes, ruamel.yaml.comments  # imported before counting
def hook(event, args):
    if event == "fcntl.flock":
        state["armed"] = True
    elif state["armed"] and event in WATCH:
        state["count"] += 1
        if state["count"] == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
from clara_wf.cli import main
try:
    main(sys.argv[1:])
finally:
    sys.stderr.write(f"\ncrash-steps: {state['count']}\n")
"""


def run_crashing(args: List[str], cwd: Path, crash_at: int) -> subprocess.CompletedProcess:
    """Run ``clara-wf ARGS``, killed with SIGKILL before file-system step ``crash_at`` (0: never)."""
    env = {**os.environ, "CLARA_WF_CRASH_AT": str(crash_at)}
    env.pop("CLARA_WF_CHART_DIR", None)
    return subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def steps_of(args: List[str], cwd: Path) -> int:
    """How many file-system steps the command takes when nothing stops it."""
    result = run_crashing(args, cwd, 0)
    assert result.returncode == 0, result.stderr
    return int(result.stderr.rsplit("crash-steps: ", 1)[1].split()[0])


def spread(total: int, count: int) -> List[int]:
    """``count`` crash points spread over 1..total (all of them when count >= total)."""
    if count >= total:
        return list(range(1, total + 1))
    return sorted({1 + round(i * (total - 1) / (count - 1)) for i in range(count)})


def leftovers(project: Path) -> List[str]:
    """Scratch an interrupted edit could leave: none may survive the next command."""
    chart = project / "charts" / "clara-workflow"
    found = [p.name for p in (chart / "templates" / "stages").iterdir() if p.name.startswith(".tmp-")]
    found += [p.name for p in chart.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".clara-wf-journal")]
    return found


def killed(result: subprocess.CompletedProcess) -> Optional[bool]:
    return result.returncode == -9
