"""Make (or find cached) the Python environment of every stage app that lists requirements.

`make setup` runs this, so that `make test` and CI start with each stage's environment
ready (uv, from the package index, once per requirements.txt; no network when cached):

    python tools/stage_envs.py [APPS_DIR]      # default: apps/ of this project
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clara_wf import stage_env  # noqa: E402
from clara_wf.errors import ClaraWfError  # noqa: E402


def main(argv: list) -> int:
    apps = Path(argv[0]) if argv else ROOT / "apps"
    for requirements in sorted(apps.glob(f"*/{stage_env.REQUIREMENTS}")):
        name = requirements.parent.name
        try:
            made = stage_env.ensure(requirements, progress=lambda m: print(m, flush=True), what=f"stage {name}")
        except ClaraWfError as err:
            print(f"stage_envs: {err}", file=sys.stderr)
            return 1
        print(f"stage {name}: {'made' if made.built else 'cached'} Python environment {made.folder} "
              f"({made.seconds:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
