"""Send a job's results to a destination: C-STORE (pynetdicom) or DICOMweb STOW-RS (dicomweb-client).

One call sends every file it is given over one association (one request for STOW-RS) and
reports what went and what did not; retrying with backoff is the caller's business
(``service``), so that every attempt is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from clara_wf.dicom.config import Destination

ACSE_TIMEOUT_S = 30
DIMSE_TIMEOUT_S = 60


@dataclass
class SendResult:
    sent: List[str] = field(default_factory=list)  # file names
    failed: List[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.message


def dicom_files(folder: Path) -> List[Path]:
    """Every DICOM file (a Part 10 file: 'DICM' after the preamble) below folder, in name order."""
    found: List[Path] = []
    if not folder.is_dir():
        return found
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as handle:
            head = handle.read(132)
        if len(head) == 132 and head[128:] == b"DICM":
            found.append(path)
    return found


def send(destination: Destination, files: List[Path], *, calling_ae: str, root: Optional[Path] = None) -> SendResult:
    """Send ``files``; the result names them relative to ``root`` (default: by file name)."""
    def label(path: Path) -> str:
        return str(path.relative_to(root)) if root is not None else path.name

    if destination.kind == "stow-rs":
        return _stow(destination, files, label)
    return _c_store(destination, files, label, calling_ae=calling_ae)


def _c_store(destination: Destination, files: List[Path], label: Callable[[Path], str], *,
             calling_ae: str) -> SendResult:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError
    from pynetdicom import AE
    from pynetdicom.presentation import build_context

    result = SendResult()
    datasets = []
    contexts: Dict[tuple, Any] = {}
    for path in files:
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError) as err:
            result.failed.append(label(path))
            result.message = f"{label(path)} is not readable DICOM: {err}"
            continue
        datasets.append((path, ds))
        syntax = ds.file_meta.TransferSyntaxUID
        contexts.setdefault((ds.SOPClassUID, syntax), build_context(ds.SOPClassUID, [syntax]))
    if not datasets:
        return result
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ACSE_TIMEOUT_S
    ae.dimse_timeout = DIMSE_TIMEOUT_S
    ae.network_timeout = DIMSE_TIMEOUT_S
    ae.requested_contexts = list(contexts.values())[:128]
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "could not be reached or aborted the association"
        result.failed += [label(p) for p, _ in datasets]
        result.message = f"{destination.describe()} {why}"
        return result
    try:
        for path, ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                result.failed.append(label(path))
                result.message = f"{destination.describe()}: no response to C-STORE of {label(path)} (connection lost?)"
                if not assoc.is_established:
                    done = set(result.failed) | set(result.sent)
                    result.failed += [label(p) for p, _ in datasets if label(p) not in done]
                    break
            elif code in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or success with warnings
                result.sent.append(label(path))
            else:
                result.failed.append(label(path))
                result.message = f"{destination.describe()} refused {label(path)} (status 0x{code:04X})"
    finally:
        if assoc.is_established:
            assoc.release()
    return result


def _stow(destination: Destination, files: List[Path], label: Callable[[Path], str]) -> SendResult:
    result = SendResult()
    try:
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        result.failed = [label(p) for p in files]
        result.message = "STOW-RS needs dicomweb-client: pip install dicomweb-client"
        return result
    from pydicom import dcmread

    try:
        client = DICOMwebClient(url=destination.stow_url)
        client.set_http_retry_params(retry=False)  # retries and their backoff are the service's, recorded per attempt
        client.store_instances([dcmread(p) for p in files])
        result.sent = [label(p) for p in files]
    except Exception as err:  # the HTTP layer raises many kinds; each one is a failed attempt to record
        result.failed = [label(p) for p in files]
        result.message = f"{destination.stow_url}: STOW-RS failed: {type(err).__name__}: {str(err)[:200]}"
    return result
