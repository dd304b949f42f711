"""``python -m clara_wf.runner -- PROGRAM ARGS...``"""

import sys

from clara_wf.runner import main

if __name__ == "__main__":
    sys.exit(main())
