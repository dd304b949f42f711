"""The Storage SCP (pynetdicom): C-ECHO and C-STORE of every storage SOP class, in any transfer syntax.

Who may call is decided before the association is accepted: the called AE title must be
one of ours and, with ``reject-unknown-sources``, the calling AE title and the peer's
address must match a configured source; anything else gets a proper A-ASSOCIATE-RJ
(calling / called AE title not recognised), as Clara's ``rejectUnknownSources`` did.
A received data set is handed to the adapter as the bytes sent (file meta + raw data set,
never decoded and re-encoded); the success status goes back only once it is on disk.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Callable, Dict, List, Optional

from clara_wf.dicom import store as st
from clara_wf.dicom.config import AdapterConfig

# C-STORE statuses (PS3.4 B.2.3 / PS3.7 C)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
DATASET_MISMATCH = 0xA900
# A-ASSOCIATE-RJ: rejected-permanent (1), by the service user (1), reason
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07
VERIFICATION = "1.2.840.10008.1.1"  # the Verification SOP Class (C-ECHO)


@dataclass
class Peer:
    called_ae: str
    calling_ae: str
    host: str
    port: int
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    bytes: int = 0


class StorageSCP:
    """Accepts associations for the configured AE titles and passes each instance to ``receive``.

    ``receive(peer, sop_uid, study_uid, series_uid, patient_id, data) -> bool`` keeps the
    instance durably and returns False for a duplicate; it raises OSError when it cannot.
    """

    def __init__(self, config: AdapterConfig, receive: Callable[..., bool], log: Callable[[str], None]):
        self.config = config
        self.receive = receive
        self.log = log
        self._peers: Dict[int, Peer] = {}
        self._lock = threading.Lock()
        self._server: Optional[Any] = None

    def check_caller(self, called: str, calling: str, host: str) -> Optional[int]:
        """None when the association may go ahead, else the A-ASSOCIATE-RJ reason."""
        if called not in self.config.called:
            return CALLED_AE_NOT_RECOGNISED
        if not self.config.allowed(calling, host):
            return CALLING_AE_NOT_RECOGNISED
        return None

    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        # pynetdicom logs every association at INFO; the adapter logs its own summary lines.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = AE(ae_title=next(iter(self.config.called)))
        ae.maximum_associations = self.config.max_associations
        ae.require_called_aet = False  # checked per association against every called AE title
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        handlers: List[Any] = [
            (evt.EVT_CONN_OPEN, self._on_connect),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        self._server = ae.start_server((self.config.bind_address, self.config.port), block=False,
                                       evt_handlers=handlers)

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.config.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # --- handlers (run in each association's thread) -----------------------------------

    def _on_connect(self, event) -> None:
        from pynetdicom.acse import ACSE

        scp = self
        host, port = event.address[0], int(event.address[1])

        class GatedACSE(ACSE):
            """Rejects an unknown caller before negotiating anything."""

            def _negotiate_as_acceptor(self) -> None:
                from pynetdicom import evt

                request: Any = self.requestor.primitive
                calling = str(request.calling_ae_title).strip()
                called = str(request.called_ae_title).strip()
                reason = scp.check_caller(called, calling, host)
                if reason is not None:
                    self.requestor.ae_title = calling
                    why = "called AE title not served" if reason == CALLED_AE_NOT_RECOGNISED else "unknown source"
                    scp.log(f"rejected association from {calling}@{host}:{port} to {called}: {why}")
                    self.send_reject(0x01, 0x01, reason)
                    evt.trigger(self.assoc, evt.EVT_REJECTED, {})
                    self.assoc.kill()
                    return
                with scp._lock:
                    scp._peers[id(self.assoc)] = Peer(called_ae=called, calling_ae=calling, host=host, port=port)
                super()._negotiate_as_acceptor()

        event.assoc.acse = GatedACSE(event.assoc)

    def _peer(self, event) -> Optional[Peer]:
        with self._lock:
            return self._peers.get(id(event.assoc))

    def _on_echo(self, event) -> int:
        return SUCCESS

    def _on_store(self, event) -> int:
        from pydicom import dcmread

        peer = self._peer(event)
        if peer is None:
            return OUT_OF_RESOURCES
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            data = event.encoded_dataset()
            # Read only the header elements we group by; the bytes are stored as sent.
            head = dcmread(BytesIO(data), stop_before_pixels=True,
                           specific_tags=["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
            study, series = str(head.get("StudyInstanceUID", "")), str(head.get("SeriesInstanceUID", ""))
            patient = str(head.get("PatientID", ""))
            in_data = str(head.get("SOPInstanceUID", ""))
        except Exception as err:  # a data set pydicom cannot parse: refuse it, keep serving
            self.log(f"refused an instance from {peer.calling_ae}@{peer.host}: unreadable data set ({type(err).__name__})")
            peer.refused += 1
            return CANNOT_UNDERSTAND
        if not (st.is_uid(sop_uid) and st.is_uid(study) and st.is_uid(series)) or (in_data and in_data != sop_uid):
            self.log(f"refused instance {sop_uid or '?'} from {peer.calling_ae}@{peer.host}: "
                     "missing or invalid SOP Instance / Study / Series UID")
            peer.refused += 1
            return DATASET_MISMATCH
        try:
            stored = self.receive(peer, sop_uid=sop_uid, study_uid=study, series_uid=series, patient_id=patient,
                                  data=data)
        except OSError as err:
            self.log(f"could not keep instance {sop_uid} from {peer.calling_ae}@{peer.host}: {err}")
            peer.refused += 1
            return OUT_OF_RESOURCES
        if stored:
            peer.stored += 1
            peer.bytes += len(data)
        else:
            peer.duplicates += 1
        return SUCCESS

    def _on_end(self, event) -> None:
        with self._lock:
            peer = self._peers.pop(id(event.assoc), None)
        if peer is None:
            return
        how = "released" if event.event.name == "EVT_RELEASED" else "aborted"
        extra = "".join([f", {peer.duplicates} duplicates" if peer.duplicates else "",
                         f", {peer.refused} refused" if peer.refused else ""])
        self.log(f"association from {peer.calling_ae}@{peer.host}:{peer.port} to {peer.called_ae} {how}: "
                 f"{peer.stored} instances stored ({peer.bytes / 1e6:.2f} MB){extra}")

    def _on_close(self, event) -> None:
        # A connection that dies without release/abort still gets its summary line.
        self._on_end(event)
