"""The adapter's configuration: from command-line flags (quick start) or a YAML file (full form).

The file follows the shape of Clara Deploy's DICOM Adapter configuration::

    dicom:
      scp:
        port: 11112                    # default 104 when root, 11112 otherwise
        max-associations: 4
        reject-unknown-sources: true   # only the sources below may call
        sources:
          - {ae-title: STORESCU, host-ip: 127.0.0.1}
        ae-titles:                     # called AE titles, each with what to do
          - ae-title: CLARA
            workflows: [ai]            # keys of workflows in the chart's values.yaml
            grouping: StudyInstanceUID # or SeriesInstanceUID
            timeout: 5                 # seconds without a new instance that close a group
            destinations: [PACS]
      scu:
        ae-title: CLARA                # our calling AE title when we export
        retries: 3                     # attempts after the first, per destination
        retry-delay: 2                 # seconds before the first retry; doubles each time
        destinations:
          - {name: PACS, ae-title: ORTHANC, host-ip: 127.0.0.1, port: 4242}
          - {name: WEB, stow-rs: "http://127.0.0.1:8042/dicom-web"}
    engine: local                      # local, kubernetes or auto
    max-concurrent-jobs: 2

Everything is checked here, before a port is opened: one ``InputError`` line per problem.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from clara_wf.errors import InputError

DEFAULT_AE_TITLE = "CLARA"
GROUPINGS = {"studyinstanceuid": "StudyInstanceUID", "seriesinstanceuid": "SeriesInstanceUID"}
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ASSOCIATIONS = 8
_DESTINATION = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def default_port() -> int:
    """104 (the DICOM port) when we may bind it, 11112 (the unprivileged DICOM port) otherwise."""
    return 104 if hasattr(os, "geteuid") and os.geteuid() == 0 else 11112


@dataclass(frozen=True)
class Source:
    ae_title: str
    host: str
    addresses: Tuple[str, ...]  # what host resolves to, compared with the peer's address


@dataclass(frozen=True)
class Destination:
    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    stow_url: str = ""

    @property
    def kind(self) -> str:
        return "stow-rs" if self.stow_url else "c-store"

    def describe(self) -> str:
        return self.stow_url if self.stow_url else f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CalledAE:
    """What to do with what is sent to one of our AE titles."""

    ae_title: str
    workflows: Tuple[str, ...]
    grouping: str = "StudyInstanceUID"
    timeout: float = DEFAULT_TIMEOUT_S
    destinations: Tuple[str, ...] = ()


@dataclass(frozen=True)
class AdapterConfig:
    port: int
    called: Dict[str, CalledAE]
    destinations: Dict[str, Destination]
    sources: Tuple[Source, ...] = ()
    reject_unknown_sources: bool = False
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS
    scu_ae_title: str = DEFAULT_AE_TITLE
    retries: int = 3
    retry_delay: float = 2.0
    engine: str = "local"
    max_concurrent_jobs: int = 2
    bind_address: str = ""  # "" = every interface
    trtis_uri: Optional[str] = None  # a running Triton (host:port) for every job; None: the engine provides one
    source_file: Optional[Path] = None

    def workflows(self) -> List[str]:
        return sorted({w for ae in self.called.values() for w in ae.workflows})

    def allowed(self, calling_ae: str, peer_address: str) -> bool:
        """Clara's rejectUnknownSources: the calling AE title and the peer's address must match a source."""
        if not self.reject_unknown_sources:
            return True
        return any(s.ae_title == calling_ae and peer_address in s.addresses for s in self.sources)


def check_engine(value: object, where: str) -> str:
    """An engine name: auto or one of clara_wf.engines (listing them imports no engine)."""
    from clara_wf import engines

    names = [engines.AUTO, *engines.available()]
    if value not in names:
        raise InputError(f"{where} must be one of {', '.join(names)}, not {value!r}")
    return str(value)


def check_ae_title(value: object, where: str) -> str:
    """An AE title: 1-16 characters of the default character repertoire, no backslash, not only spaces."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: an AE title must be a non-empty string")
    title = value.strip()
    if len(title) > 16 or "\\" in title or any(ord(c) < 32 or ord(c) > 126 for c in title):
        raise InputError(f"{where}: AE title {value!r} must be 1-16 printable ASCII characters without '\\'")
    return title


def check_port(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InputError(f"{where}: port must be a number from 1 to 65535, not {value!r}")
    return value


def _positive(value: object, where: str, *, integer: bool = False, zero: bool = False) -> float:
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or value < 0 or (value == 0 and not zero):
        kind = "a whole number" if integer else "a number"
        raise InputError(f"{where} must be {kind} {'>= 0' if zero else '> 0'}, not {value!r}")
    return value


def _resolve(host: str, where: str) -> Tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as err:
        raise InputError(f"{where}: host {host!r} does not resolve ({err})") from None
    return tuple(sorted({str(info[4][0]) for info in infos}))


def check_grouping(value: object, where: str) -> str:
    key = str(value).replace(" ", "").lower() if isinstance(value, str) else ""
    if key not in GROUPINGS:
        raise InputError(f"{where}: grouping must be StudyInstanceUID or SeriesInstanceUID, not {value!r}")
    return GROUPINGS[key]


def parse_destination(text: str, name: Optional[str] = None) -> Destination:
    """``AE@HOST:PORT`` (the --destination form)."""
    match = _DESTINATION.match(text.strip())
    if not match:
        raise InputError(f"--destination {text!r}: expected AE@HOST:PORT (e.g. PACS@10.0.0.5:104)")
    ae = check_ae_title(match["ae"], f"--destination {text!r}")
    port = check_port(int(match["port"]), f"--destination {text!r}")
    return Destination(name=name or ae, ae_title=ae, host=match["host"].strip("[]"), port=port)


def from_flags(
    *,
    ae_title: str = DEFAULT_AE_TITLE,
    port: Optional[int] = None,
    workflows: Sequence[str] = (),
    destinations: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
    engine: str = "local",
    grouping: str = "StudyInstanceUID",
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
    bind_address: str = "",
    trtis_uri: Optional[str] = None,
) -> AdapterConfig:
    """The quick-start form: one called AE title, its workflows and destinations; any caller accepted."""
    title = check_ae_title(ae_title, "--ae-title")
    if not workflows:
        raise InputError("no workflow to run: give --workflow ID (a key of workflows in values.yaml) or --config FILE")
    check_engine(engine, "--engine")
    _positive(timeout, "--timeout")
    _positive(max_associations, "--max-associations", integer=True)
    dests: Dict[str, Destination] = {}
    for text in destinations:
        dest = parse_destination(text)
        name = dest.name
        n = 2
        while name in dests:  # the same AE title at two places: keep both
            name = f"{dest.name}-{n}"
            n += 1
        dests[name] = Destination(name=name, ae_title=dest.ae_title, host=dest.host, port=dest.port)
    called = CalledAE(ae_title=title, workflows=tuple(dict.fromkeys(workflows)), grouping=check_grouping(grouping, "--grouping"),
                      timeout=float(timeout), destinations=tuple(dests))
    return AdapterConfig(
        port=check_port(port, "--port") if port is not None else default_port(),
        called={title: called}, destinations=dests, engine=engine, max_associations=max_associations,
        scu_ae_title=title, bind_address=bind_address, trtis_uri=_trtis_uri(trtis_uri, "--trtis-uri"),
    )


def _mapping(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping")
    return value


def _list(value: object, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list")
    return value


def _no_unknown(data: dict, known: Sequence[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")


def load(path: Path, *, port: Optional[int] = None, engine: Optional[str] = None,
         trtis_uri: Optional[str] = None) -> AdapterConfig:
    """Read and check a configuration file; flags given beside it (port, engine) win."""
    from clara_wf import values_edit

    if not Path(path).is_file():
        raise InputError(f"configuration file {path} is missing" if not Path(path).exists() else f"{path} is not a file")
    data = values_edit.load(Path(path))  # bounded YAML; a parse error is one InputError line
    where = str(path)
    data = _mapping(data, where)
    _no_unknown(data, ("dicom", "engine", "max-concurrent-jobs", "trtis-uri"), where)
    dicom = _mapping(data.get("dicom"), f"{where}: dicom")
    _no_unknown(dicom, ("scp", "scu"), f"{where}: dicom")
    scp = _mapping(dicom.get("scp"), f"{where}: dicom.scp")
    scu = _mapping(dicom.get("scu"), f"{where}: dicom.scu")
    _no_unknown(scp, ("port", "bind-address", "max-associations", "reject-unknown-sources", "sources", "ae-titles"),
                f"{where}: dicom.scp")
    _no_unknown(scu, ("ae-title", "retries", "retry-delay", "destinations"), f"{where}: dicom.scu")

    destinations: Dict[str, Destination] = {}
    for i, item in enumerate(_list(scu.get("destinations"), f"{where}: dicom.scu.destinations")):
        at = f"{where}: dicom.scu.destinations[{i}]"
        item = _mapping(item, at)
        _no_unknown(item, ("name", "ae-title", "host-ip", "port", "stow-rs"), at)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{at}: a destination needs a name")
        if name in destinations:
            raise InputError(f"{at}: destination {name!r} is named twice")
        if item.get("stow-rs"):
            url = str(item["stow-rs"])
            if not re.match(r"^https?://[^/\s]+", url):
                raise InputError(f"{at}: stow-rs must be an http(s) URL of a DICOMweb service, not {url!r}")
            destinations[name] = Destination(name=name, stow_url=url.rstrip("/"))
            continue
        if not item.get("host-ip"):
            raise InputError(f"{at}: destination {name!r} needs host-ip (or stow-rs)")
        destinations[name] = Destination(
            name=name, ae_title=check_ae_title(item.get("ae-title"), at), host=str(item["host-ip"]),
            port=check_port(item.get("port"), at),
        )

    sources = []
    for i, item in enumerate(_list(scp.get("sources"), f"{where}: dicom.scp.sources")):
        at = f"{where}: dicom.scp.sources[{i}]"
        item = _mapping(item, at)
        _no_unknown(item, ("ae-title", "host-ip"), at)
        host = item.get("host-ip")
        if not isinstance(host, str) or not host:
            raise InputError(f"{at}: a source needs host-ip")
        sources.append(Source(ae_title=check_ae_title(item.get("ae-title"), at), host=host, addresses=_resolve(host, at)))
    reject = scp.get("reject-unknown-sources", bool(sources))
    if not isinstance(reject, bool):
        raise InputError(f"{where}: dicom.scp.reject-unknown-sources must be true or false")
    if reject and not sources:
        raise InputError(f"{where}: dicom.scp.reject-unknown-sources is true but no sources are listed: nobody could send")

    called: Dict[str, CalledAE] = {}
    entries = _list(scp.get("ae-titles"), f"{where}: dicom.scp.ae-titles")
    if not entries:
        raise InputError(f"{where}: dicom.scp.ae-titles is empty: list at least one AE title with its workflows")
    for i, item in enumerate(entries):
        at = f"{where}: dicom.scp.ae-titles[{i}]"
        item = _mapping(item, at)
        _no_unknown(item, ("ae-title", "workflows", "grouping", "timeout", "destinations"), at)
        title = check_ae_title(item.get("ae-title"), at)
        if title in called:
            raise InputError(f"{at}: AE title {title!r} is listed twice")
        workflows = _list(item.get("workflows"), f"{at}.workflows")
        if not workflows or not all(isinstance(w, str) and w for w in workflows):
            raise InputError(f"{at}: workflows must list at least one workflow id")
        dest_names = _list(item.get("destinations"), f"{at}.destinations")
        for name in dest_names:
            if name not in destinations:
                known = ", ".join(destinations) or "none"
                raise InputError(f"{at}: destination {name!r} is not in dicom.scu.destinations (known: {known})")
        called[title] = CalledAE(
            ae_title=title, workflows=tuple(dict.fromkeys(workflows)),
            grouping=check_grouping(item.get("grouping", "StudyInstanceUID"), at),
            timeout=float(_positive(item.get("timeout", DEFAULT_TIMEOUT_S), f"{at}: timeout")),
            destinations=tuple(dict.fromkeys(dest_names)),
        )

    chosen_engine = engine or data.get("engine", "local")
    check_engine(chosen_engine, f"{where}: engine")
    chosen_port = check_port(scp["port"], f"{where}: dicom.scp.port") if "port" in scp else default_port()
    if port is not None:
        chosen_port = check_port(port, "--port")
    return AdapterConfig(
        port=chosen_port, called=called, destinations=destinations, sources=tuple(sources),
        reject_unknown_sources=reject,
        max_associations=int(_positive(scp.get("max-associations", DEFAULT_MAX_ASSOCIATIONS),
                                       f"{where}: dicom.scp.max-associations", integer=True)),
        scu_ae_title=check_ae_title(scu.get("ae-title", DEFAULT_AE_TITLE), f"{where}: dicom.scu.ae-title"),
        retries=int(_positive(scu.get("retries", 3), f"{where}: dicom.scu.retries", integer=True, zero=True)),
        retry_delay=float(_positive(scu.get("retry-delay", 2.0), f"{where}: dicom.scu.retry-delay", zero=True)),
        engine=chosen_engine,
        max_concurrent_jobs=int(_positive(data.get("max-concurrent-jobs", 2), f"{where}: max-concurrent-jobs", integer=True)),
        bind_address=str(scp.get("bind-address", "")),
        trtis_uri=_trtis_uri(trtis_uri, "--trtis-uri") if trtis_uri else _trtis_uri(data.get("trtis-uri"), f"{where}: trtis-uri"),
        source_file=Path(path),
    )


def _trtis_uri(value: object, where: str) -> Optional[str]:
    if value is None or value == "":
        return None
    from clara_wf import workflow as wf

    try:
        wf.check_trtis_uri(str(value))
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
    return str(value)


def check_workflows(config: AdapterConfig, known: Sequence[str], values_file: Path) -> None:
    """Every workflow the configuration names exists in the chart (checked before the port opens)."""
    for ae in config.called.values():
        for workflow_id in ae.workflows:
            if workflow_id not in known:
                raise InputError(f"AE title {ae.ae_title!r} runs workflow {workflow_id!r}, which is not in "
                                 f"{values_file} (workflows: {', '.join(known) or 'none'})")


def backoff(retries: int, delay: float) -> List[float]:
    """Seconds to wait before each retry: delay, 2*delay, 4*delay ..."""
    return [delay * (2 ** i) for i in range(retries)]
