"""``python -m clara_wf.runner -- PROGRAM ARGS...``"""

import os
import sys

from clara_wf.runner import main

if __name__ == "__main__":
    code = main()
    # Everything the runner writes goes out unbuffered (os.write) and its lock is in place,
    # so the interpreter's teardown (milliseconds of CPU, while the next stage is starting
    # its program on the same cores) is skipped.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
