"""Servers for the DICOM adapter tests: the adapter itself (the real CLI), dcmtk's storescp, Orthanc.

Each server listens on a free loopback port chosen here and is stopped by the fixture that
started it (its whole process group), whatever the test did.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional

from helpers import copy_project
from helpers.workflows import add_workflow, python_stage


def dcmtk(name: str) -> Optional[str]:
    """dcmtk's program, not pynetdicom's console scripts of the same name in the venv."""
    venv_bin = Path(sys.prefix) / "bin"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != venv_bin)
    return shutil.which(name, path=path)


HAVE_DCMTK = all(dcmtk(t) for t in ("storescu", "storescp", "echoscu"))
HAVE_ORTHANC = shutil.which("Orthanc") is not None
NO_DCMTK = "dcmtk is not installed (apt-get install dcmtk)"
NO_ORTHANC = "Orthanc is not installed (apt-get install orthanc)"

# A DICOM-to-DICOM stage for tests: every received instance becomes a derived instance of
# a new series (new Series and SOP Instance UIDs), so a result is told apart from its input.
DERIVE = (
    "import os, pathlib;"
    "from pydicom import dcmread;"
    "from pydicom.uid import generate_uid;"
    "app = pathlib.Path(os.environ['NVIDIA_CLARA_APPDIR']);"
    "src, dst = app / 'input', app / 'output';"
    "files = sorted(src.rglob('*.dcm'));"
    "series = generate_uid();"
    "[ (lambda ds: (setattr(ds, 'SeriesInstanceUID', series), setattr(ds, 'SOPInstanceUID', generate_uid()),"
    "   setattr(ds.file_meta, 'MediaStorageSOPInstanceUID', ds.SOPInstanceUID),"
    "   setattr(ds, 'SeriesDescription', 'clara-wf result'), setattr(ds, 'SeriesNumber', 99),"
    "   ds.save_as(dst / f.name)))(dcmread(f)) for f in files ];"
    "print('derived', len(files), 'instances')"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 60, what: str = "condition", every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def adapter_project(root: Path) -> Path:
    """A project copy with a DICOM-to-DICOM workflow ``derive`` of one stage."""
    project = copy_project(root)
    add_workflow(project, "derive", {"derive": python_stage(DERIVE)})
    return project


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Adapter:
    """``clara-wf dicom-adapter serve ARGS`` in a project, its stderr in a file."""

    def __init__(self, project: Path, *args: str, port: Optional[int] = None, log: Optional[Path] = None):
        self.project = project
        self.port = port or free_port()
        self.args = ["dicom-adapter", "serve", "--port", str(self.port), "--bind", "127.0.0.1", *args]
        self.log = log or project / f"adapter-{self.port}.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, wait: bool = True) -> "Adapter":
        assert not self.log.exists(), f"{self.log} exists: give each adapter run its own log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "clara_wf", *self.args], cwd=self.project,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            wait_for(lambda: "listening on port" in self.text() or self.proc.poll() is not None, 60, "the adapter")
            assert self.proc.poll() is None, self.text()
        return self

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_group(self.proc, sig)

    def jobs(self) -> List[dict]:
        out = subprocess.run([sys.executable, "-m", "clara_wf", "jobs", "--output", "json"], cwd=self.project,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    def job(self, job_id: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "clara_wf", "jobs", "show", job_id, "--output", "json"],
                             cwd=self.project, capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    def wait_jobs(self, n: int, states=("done", "failed"), timeout: float = 120) -> List[dict]:
        def finished():
            jobs = self.jobs()
            return jobs if len(jobs) >= n and all(j["state"] in states for j in jobs) else None
        return wait_for(finished, timeout, f"{n} finished jobs (log: {self.log})", every=0.3)


class StoreSCP:
    """dcmtk's storescp as a destination: what it receives lands in ``folder``."""

    def __init__(self, folder: Path, ae_title: str = "DEST", env: Optional[dict] = None):
        self.folder = folder
        self.ae_title = ae_title
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder.parent / f"storescp-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([dcmtk("storescp"), "-aet", ae_title, "-od", str(folder), "+xa", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **(env or {})})
        wait_for(lambda: _listening(self.port) or self.proc.poll() is not None, 20, "storescp")
        assert self.proc.poll() is None, self.log.read_text()

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def files(self) -> List[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        stop_group(self.proc)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def storescu(port: int, files: List[Path], *, calling: str = "SCANNER", called: str = "CLARA") -> subprocess.CompletedProcess:
    return subprocess.run([dcmtk("storescu"), "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


class Orthanc:
    """Orthanc with its own storage, HTTP on loopback only; modality ``clara`` is the adapter."""

    def __init__(self, folder: Path, adapter_port: int, adapter_ae: str = "CLARA"):
        self.http_port = free_port()
        self.dicom_port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "clara-wf-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [],
            "DicomModalities": {"clara": [adapter_ae, "127.0.0.1", adapter_port]},
            "DicomAlwaysAllowStore": True, "DicomCheckModalityHost": False,
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = folder / "orthanc.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(lambda: self._alive(), 60, "Orthanc")

    def _alive(self) -> bool:
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def _request(self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "application/json"):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method,
                                         headers={"Content-Type": content_type} if body is not None else {})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, body, content_type: str = "application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._request("POST", path, data, content_type)

    def stop(self) -> None:
        stop_group(self.proc)
