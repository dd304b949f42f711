#!/usr/bin/env python3
"""Build (once per machine) the local Debian base image for the stage images; print its name.

    .venv/bin/python tools/base_image.py [--runtime podman|docker] [--rebuild]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clara_wf.containers.base_image import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
