"""``clara-wf jobs``: the adapter's jobs as rows (json) or a table, and one job in full."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

from clara_wf.dicom import store as st


def _when(epoch: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else ""


def summary(store: st.Store, record: dict) -> dict:
    """What the listing shows of a job (json keys)."""
    instances = record.get("instances", 0)
    if record.get("state") == st.RECEIVING:
        instances = store.count_received(record)
    exports = record.get("exports") or {}
    return {
        "id": record["id"], "state": record.get("state", "?"), "workflow": record.get("workflow", ""),
        "grouping": record.get("grouping", ""), "uid": record.get("uid", ""),
        "study_uid": record.get("study_uid", ""),
        "from": f"{record.get('calling_ae', '')}@{record.get('calling_host', '')}",
        "called_ae": record.get("called_ae", ""), "instances": instances,
        "created": record.get("created"), "started": record.get("started"), "ended": record.get("ended"),
        "run_seconds": record.get("run_seconds"),
        "exports": {name: r.get("state") for name, r in exports.items()},
        "message": record.get("message", ""),
    }


def rows(store: st.Store) -> List[dict]:
    return [summary(store, r) for r in store.jobs()]


def table(items: List[dict]) -> str:
    if not items:
        return "no jobs"
    head = ["JOB", "STATE", "WORKFLOW", "STUDY/SERIES", "FROM", "N", "CREATED", "RUN", "EXPORTS", "MESSAGE"]
    lines = [head]
    for item in items:
        run = f"{item['run_seconds']:.1f}s" if item.get("run_seconds") is not None else ""
        exports = ",".join(f"{n}:{s}" for n, s in item["exports"].items())
        uid = item["uid"] if len(item["uid"]) <= 28 else "…" + item["uid"][-27:]
        lines.append([item["id"], item["state"], item["workflow"], uid, item["from"], str(item["instances"]),
                      _when(item["created"]), run, exports, item["message"][:60]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def detail(store: st.Store, record: dict) -> dict:
    """One job in full, with its run record (run.json of the engine) when there is one."""
    out = dict(record)
    if out.get("state") == st.RECEIVING:
        out["instances"] = store.count_received(record)
    run_record = Path(record.get("payload", "")) / "run.json"
    if record.get("run_record") and run_record.is_file():
        try:
            out["run"] = json.loads(run_record.read_text())
        except ValueError:
            out["run"] = f"unreadable: {run_record}"
    return out


def describe(item: dict) -> str:
    lines = [f"Job {item['id']}: {item.get('state')}"]
    for label, key in (("workflow", "workflow"), ("called AE", "called_ae"), ("grouping", "grouping"), ("uid", "uid"),
                       ("instances", "instances"), ("payload", "payload"), ("engine", "engine"),
                       ("run record", "run_record"), ("message", "message")):
        if item.get(key) not in (None, ""):
            lines.append(f"  {label + ':':12} {item[key]}")
    lines.append(f"  {'from:':12} {item.get('calling_ae', '')}@{item.get('calling_host', '')}")
    for label, key in (("created", "created"), ("queued", "queued"), ("last recv", "received_last"),
                       ("started", "started"), ("ended", "ended")):
        if item.get(key):
            lines.append(f"  {label + ':':12} {_when(item[key])}")
    if item.get("run_seconds") is not None:
        lines.append(f"  {'run time:':12} {item['run_seconds']:.2f} s")
    run = item.get("run")
    if isinstance(run, dict):
        for stage in run.get("stages") or []:
            lines.append(f"  stage {stage.get('stage')}: {stage.get('state')} (exit {stage.get('exit_code')})")
    for name, result in (item.get("exports") or {}).items():
        lines.append(f"  export {name} ({result.get('destination')}): {result.get('state')}, "
                     f"{len(result.get('sent') or [])} sent, {result.get('attempts', 0)} attempts"
                     + (f" - {result['message']}" if result.get("message") else ""))
    return "\n".join(lines)
