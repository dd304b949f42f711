"""ai-vnet: segment every CT volume of the input folder with a model served by Triton.

Reads each ``.mhd`` / ``.nii`` / ``.nii.gz`` under the input folder with SimpleITK, sends
the volume (float32, Hounsfield units, numpy order z/y/x) to Triton over HTTP, and writes
``<name>.seg.mhd`` + ``.raw`` (uint8 labels) with the input's spacing, origin and
direction into the output folder, keeping sub-folders.

Folders come from the Clara variables, as the clara-workflow chart sets them:

* input  = ``$NVIDIA_CLARA_APPDIR/<dirname of $NVIDIA_CLARA_INPUTS>`` (APPDIR defaults to
  /app, INPUTS to input/ - if INPUTS itself names a folder, that folder);
* output = likewise from ``$NVIDIA_CLARA_OUTPUTS`` (default output/);
* when ``NVIDIA_CLARA_INPUTPATHS`` / ``NVIDIA_CLARA_OUTPUTPATHS`` are set (Clara
  pipeline form ``name:path;name:path``) the first entry's path wins.

Triton: ``NVIDIA_CLARA_TRTISURI`` (host:port of its HTTP endpoint, default localhost:8000);
``TRITON_MODEL_NAME`` (default segmentation_ct_v1), ``TRITON_MODEL_VERSION`` (default
latest), ``TRITON_MODEL_INPUT`` / ``TRITON_MODEL_OUTPUT`` (INPUT__0 / OUTPUT__0) as in the
Clara operator development kit; ``TRITON_WAIT_SECONDS`` (default 5) is how long to wait for
a server that does not answer yet.

Its only clara_wf import is ``clara_wf.payload`` (standard library only, copied into the
image beside the runner): Clara's ``name:path;…`` lists are parsed in that one place.
Exit codes: 0 done, 1 Triton or I/O failure, 2 bad input; one line on stderr per error.
"""

import os
import sys
import time
from pathlib import Path

from clara_wf.payload import InputProblem, PayloadError, StageError, parse_paths, run_stage

# The same program serves ai-livertumor (another model): messages carry the stage's name.
STAGE = os.environ.get("NVIDIA_CLARA_STAGENAME") or "ai-vnet"
SUFFIXES = (".mhd", ".nii.gz", ".nii")
OUTPUT_SUFFIX = ".seg.mhd"


def first_path(spec, variable="NVIDIA_CLARA_INPUTPATHS"):
    """Path of the first entry of Clara's ``name:path;name:path`` list (None when it is empty)."""
    try:
        entries = parse_paths(spec, variable)
    except PayloadError as err:
        raise InputProblem(f"{err}: use the form name:/path;name:/path") from None
    return entries[0].path if entries else None


def _folder(env, paths_var, var, default):
    appdir = Path(env.get("NVIDIA_CLARA_APPDIR") or "/app")
    listed = env.get(paths_var, "").strip()
    if listed:
        path = first_path(listed, paths_var)
        if path is None:
            raise InputProblem(f"{paths_var}={listed!r} names no path: use the form name:/path;name:/path")
        return appdir / path  # an absolute path stays absolute
    value = (env.get(var) or default).strip()
    candidate = appdir / value
    if candidate.is_dir() or "/" not in value.rstrip("/"):
        return candidate
    return candidate.parent


def folders(env=None):
    """(input folder, output folder) from the NVIDIA_CLARA_* variables."""
    env = os.environ if env is None else env
    return (
        _folder(env, "NVIDIA_CLARA_INPUTPATHS", "NVIDIA_CLARA_INPUTS", "input"),
        _folder(env, "NVIDIA_CLARA_OUTPUTPATHS", "NVIDIA_CLARA_OUTPUTS", "output"),
    )


def find_inputs(input_dir):
    if not input_dir.is_dir():
        raise InputProblem(
            f"input folder {input_dir} does not exist: put the CT volumes (.mhd/.nii.gz) there "
            f"or set NVIDIA_CLARA_INPUTS / NVIDIA_CLARA_INPUTPATHS"
        )
    files = sorted(
        p for p in input_dir.rglob("*")
        if p.is_file() and p.name.lower().endswith(SUFFIXES) and not p.name.lower().endswith(OUTPUT_SUFFIX)
    )
    if not files:
        raise InputProblem(f"no .mhd, .nii or .nii.gz file in input folder {input_dir}: nothing to segment")
    return files


def output_path(source, input_dir, output_dir):
    rel = source.relative_to(input_dir)
    name = rel.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output_dir / rel.parent / (name + OUTPUT_SUFFIX)


class Segmenter:
    """One Triton connection and one model, checked before the first file."""

    def __init__(self, env):
        uri = (env.get("NVIDIA_CLARA_TRTISURI") or "localhost:8000").strip()
        for scheme in ("http://", "https://"):
            if uri.startswith(scheme):
                uri = uri[len(scheme):]
        self.uri = uri.rstrip("/")
        self.model = env.get("TRITON_MODEL_NAME") or "segmentation_ct_v1"
        self.version = env.get("TRITON_MODEL_VERSION") or ""
        self.input_name = env.get("TRITON_MODEL_INPUT") or "INPUT__0"
        self.output_name = env.get("TRITON_MODEL_OUTPUT") or "OUTPUT__0"
        try:
            self.wait = float(env.get("TRITON_WAIT_SECONDS") or 5)
        except ValueError:
            raise InputProblem(f"TRITON_WAIT_SECONDS={env.get('TRITON_WAIT_SECONDS')!r} is not a number") from None
        try:
            import tritonclient.http as httpclient
        except ImportError:
            raise StageError("tritonclient is not installed: pip install -r requirements.txt") from None
        self._http = httpclient
        try:
            self.client = httpclient.InferenceServerClient(url=self.uri, connection_timeout=10.0, network_timeout=600.0)
        except Exception as exc:  # malformed URI
            raise InputProblem(f"NVIDIA_CLARA_TRTISURI={self.uri!r} is not a valid host:port ({exc})") from None

    def check(self):
        deadline = time.monotonic() + self.wait
        reason = "not ready"
        while True:
            try:
                if self.client.is_server_ready():
                    break
            except Exception as exc:  # connection refused, DNS, timeout ...
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if time.monotonic() >= deadline:
                raise StageError(
                    f"Triton at {self.uri} is not reachable ({reason}): start it (clara-wf install_trtis) "
                    f"or set NVIDIA_CLARA_TRTISURI to its host:port"
                )
            time.sleep(0.2)
        if not self.client.is_model_ready(self.model, self.version):
            try:
                index = self.client.get_model_repository_index()
                names = sorted({m.get("name", "?") for m in index}) or ["none"]
            except Exception:
                names = ["unknown"]
            raise StageError(
                f"model {self.model!r} is not ready on Triton at {self.uri} (it serves: {', '.join(names)}): "
                f"add it to the model repository or set TRITON_MODEL_NAME"
            )

    def label_table(self):
        """What the labels mean, from the model's configuration (``parameters.labels``, a JSON
        list of {value, name, category, type}); None when the model does not say."""
        import json

        try:
            config = self.client.get_model_config(self.model, self.version)
            metadata = self.client.get_model_metadata(self.model, self.version)
        except Exception:
            return None
        text = ((config.get("parameters") or {}).get("labels") or {}).get("string_value")
        try:
            labels = json.loads(text) if text else None
        except ValueError:
            raise StageError(f"model {self.model!r}: parameters.labels in its config.pbtxt is not JSON") from None
        versions = metadata.get("versions") or []
        return {
            "kind": "clara-wf/labels",
            "algorithm": {"name": self.model, "version": self.version or (max(versions, key=int) if versions else "")},
            "labels": labels or [],
        }

    def __call__(self, volume):
        import numpy as np

        volume = np.ascontiguousarray(volume, dtype=np.float32)
        tensor = self._http.InferInput(self.input_name, list(volume.shape), "FP32")
        tensor.set_data_from_numpy(volume, binary_data=True)
        wanted = self._http.InferRequestedOutput(self.output_name, binary_data=True)
        try:
            result = self.client.infer(self.model, [tensor], model_version=self.version, outputs=[wanted])
            labels = result.as_numpy(self.output_name)
        except Exception as exc:
            raise StageError(f"inference on {self.model!r} at {self.uri} failed: {str(exc).strip()}") from None
        if labels is None or labels.size != volume.size:
            got = "nothing" if labels is None else f"{labels.size} values"
            raise StageError(
                f"Triton at {self.uri} returned {got} for {self.output_name}, expected {volume.size}: "
                f"check the model; with the CPU Triton of nvidia-pytriton, numpy must be <2 in its environment"
            )
        return labels.reshape(volume.shape)


def segment_file(source, target, segmenter, table=None):
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(source))
    except RuntimeError as exc:
        raise InputProblem(f"cannot read {source}: {str(exc).strip().splitlines()[-1]}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputProblem(
            f"{source} is a {image.GetDimension()}-D image with {image.GetNumberOfComponentsPerPixel()} "
            f"component(s): the model takes one 3-D scalar CT volume"
        )
    volume = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32))
    started = time.perf_counter()
    labels = segmenter(volume)
    seconds = time.perf_counter() - started
    seg = sitk.GetImageFromArray(labels.astype("uint8", copy=False))
    seg.CopyInformation(image)  # spacing, origin, direction
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        sitk.WriteImage(seg, str(target), False)
    except RuntimeError as exc:
        raise StageError(f"cannot write {target}: {str(exc).strip().splitlines()[-1]}") from None
    if table is not None:  # <name>.seg.json: what dicom-writer puts into the DICOM Segmentation
        import json

        target.with_suffix(".json").write_text(json.dumps(table, indent=1) + "\n")
    return image.GetSize(), seconds


def run(env=None):
    env = os.environ if env is None else env
    input_dir, output_dir = folders(env)
    sources = find_inputs(input_dir)
    segmenter = Segmenter(env)
    segmenter.check()
    table = segmenter.label_table()
    for source in sources:
        target = output_path(source, input_dir, output_dir)
        size, seconds = segment_file(source, target, segmenter, table)
        print(
            f"{STAGE}: {source.relative_to(input_dir)} ({'x'.join(map(str, size))}) -> {target} "
            f"[{segmenter.model} at {segmenter.uri}, {seconds * 1000:.0f} ms]",
            flush=True,
        )
    return len(sources)


def main():
    return run_stage(run, STAGE)


if __name__ == "__main__":
    sys.exit(main())
