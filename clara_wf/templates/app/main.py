"""[[= name =]]: a Clara operator (a stage of this project's workflows).

`clara-wf cs [[= name =]]` wrote this file. As it is, it copies every file of its inputs
to its output (a pass-through), so the stage works in a workflow from the start: put the
stage's own work in ``process()``, and the libraries it imports in requirements.txt.

Folders come from ``clara_payload`` (as Clara's pipeline driver provides it, seed ODK):
``input_entries`` / ``output_entries`` are (name, path) pairs read from
NVIDIA_CLARA_INPUTPATHS / NVIDIA_CLARA_OUTPUTPATHS (a Clara pipeline, or env.list) or
from the chart's NVIDIA_CLARA_APPDIR + NVIDIA_CLARA_INPUTS / NVIDIA_CLARA_OUTPUTS.
``clara_wf.payload`` is importable the same way in every clara-wf engine, in
`clara-wf shell` and in the stage image (the Dockerfile copies it in).

Run it alone:     clara-wf test --stage [[= name =]] [JOB]   (input: test-data/JOB/[[= name =]]/input)
In a workflow:    clara-wf test WORKFLOW [JOB]
"""

import shutil
import sys
from pathlib import Path

from clara_wf.payload import clara_payload

STAGE = "[[= name =]]"


def process(source: Path, target: Path) -> None:
    """Handle one input file, writing its result at ``target``.

    Replace this copy with the stage's work (read the file with pydicom or SimpleITK,
    send it to Triton, ...). ``target`` mirrors ``source``'s place under its input folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def input_files(path: Path):
    """The files of one input entry (a folder, walked recursively, or a single file)."""
    if path.is_file():
        return [(path, Path(path.name))]
    return [(p, p.relative_to(path)) for p in sorted(path.rglob("*")) if p.is_file()]


def main() -> int:
    inputs, outputs = clara_payload.input_entries, clara_payload.output_entries
    if not inputs or not outputs:
        print(f"{STAGE}: error: no input or output folder: set NVIDIA_CLARA_INPUTPATHS and "
              "NVIDIA_CLARA_OUTPUTPATHS (see env.list)", file=sys.stderr)
        return 2
    output_dir = Path(outputs[0].path)  # more outputs: pick each by its name, "<operator>/<output>"
    count = 0
    for entry in inputs:
        source_dir = Path(entry.path)
        if not source_dir.exists():
            print(f"{STAGE}: error: input {entry.name!r} ({source_dir}) does not exist", file=sys.stderr)
            return 2
        # One input goes to the output as it is; several go to one sub-folder each.
        target_dir = output_dir if len(inputs) == 1 else output_dir / entry.name
        for source, relative in input_files(source_dir):
            process(source, target_dir / relative)
            count += 1
    print(f"{STAGE}: {count} file(s) from {len(inputs)} input(s) written to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
