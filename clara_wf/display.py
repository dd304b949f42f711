"""The terminal display of a workflow run, the same for every engine (on ``rich``).

On a terminal, one live line per stage (waiting / running / done / failed / stopped,
elapsed) stays at the bottom while the stages' log lines scroll above it. Elsewhere (CI,
a pipe) each state change is one plain line, so logs stay readable.
"""

from __future__ import annotations

import stat
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, Optional, Sequence, TextIO

from clara_wf.events import (
    FAILED,
    FINAL_STATES,
    WAITING,
    Event,
    Info,
    LogLine,
    StageState,
    StageUpdate,
)

_MARK = {StageState.WAITING: "…", StageState.RUNNING: "▶", StageState.DONE: "✔", StageState.FAILED: "✘",
         StageState.STOPPED: "■"}
_STYLE = {StageState.WAITING: "dim", StageState.RUNNING: "cyan", StageState.DONE: "green", StageState.FAILED: "red",
          StageState.STOPPED: "yellow"}


class RunDisplay:
    def __init__(self, stages: Sequence[str], stream: TextIO = sys.stderr, live: Optional[bool] = None):
        from rich.console import Console

        self.stages = list(stages)
        self.live = stream.isatty() if live is None else live
        # Plain text as written (no markup, no highlighting, no wrapping) unless live.
        self.console = Console(file=stream, force_terminal=self.live, highlight=False, markup=False,
                               soft_wrap=True, emoji=False)
        self.width = max([len(s) for s in self.stages] + [5])
        now = time.monotonic()
        self.state: Dict[str, StageState] = {s: WAITING for s in self.stages}
        self.since: Dict[str, float] = {s: now for s in self.stages}
        self.elapsed: Dict[str, Optional[float]] = {s: None for s in self.stages}
        self.detail: Dict[str, str] = {s: "" for s in self.stages}
        self._lock = threading.Lock()
        self._live = None
        if self.live:
            from rich.live import Live

            self._live = Live(self, console=self.console, refresh_per_second=2, transient=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, LogLine):
                self._emit(f"{event.stage:>{self.width}} | {event.text}")
            elif isinstance(event, Info):
                self._emit(f"* {event.text}")
            elif isinstance(event, StageUpdate):
                self._update(event)

    def __rich__(self):
        """What the live view shows: one line per stage, refreshed by rich."""
        from rich.text import Text

        lines = Text()
        for i, name in enumerate(self.stages):
            if i:
                lines.append("\n")
            lines.append(self._line(name)[:200], style=_STYLE.get(self.state[name], ""))
        return lines

    def _update(self, event: StageUpdate) -> None:
        name = event.stage
        if name not in self.state:
            self.stages.append(name)
            self.width = max(self.width, len(name))
        now = time.monotonic()
        previous = self.state.get(name)
        state = StageState(event.state)
        if state in FINAL_STATES and previous == StageState.RUNNING:
            self.elapsed[name] = now - self.since[name]
        if state != previous:
            self.since[name] = now
        self.state[name] = state
        self.detail[name] = event.detail
        if self._live is None:
            self._print(self._line(name))

    def _line(self, name: str) -> str:
        state = self.state[name]
        seconds = self.elapsed.get(name)
        if state not in FINAL_STATES or seconds is None:
            seconds = time.monotonic() - self.since[name]
        text = f"{_MARK[state]} {name:<{self.width}}  {state:<7} {seconds:7.1f}s"
        if self.detail.get(name) and state in (WAITING, FAILED):
            text += f"  {'for ' if state == WAITING else ''}{self.detail[name]}"
        return text

    def _emit(self, line: str) -> None:
        self._print(line)

    def _print(self, line: str) -> None:
        # Through the live view's console when live: rich keeps the stage lines at the bottom.
        self.console.print(line, markup=False, highlight=False, overflow="ignore", crop=False)

    def close(self) -> None:
        """Stop the live refresh, leaving the final stage lines on screen."""
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None
def output_listing(folder: Path) -> str:
    """The output folder, listed like the original's ``ls -al``."""
    if not folder.is_dir():
        return f"ls -al {folder}\n(no such folder: the stage wrote no output)"
    entries = [folder, folder.parent, *sorted(folder.iterdir())]
    names = [".", "..", *[p.name for p in entries[2:]]]
    rows = []
    total = 0
    for path, name in zip(entries, names):
        info = path.lstat()
        total += info.st_blocks // 2 if hasattr(info, "st_blocks") else 0
        rows.append((stat.filemode(info.st_mode), str(info.st_nlink), _owner(info.st_uid), _group(info.st_gid),
                     str(info.st_size), datetime.fromtimestamp(info.st_mtime).strftime("%b %d %H:%M"), name))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [f"ls -al {folder}", f"total {total}"]
    for row in rows:
        lines.append(" ".join(
            [row[0], row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3].ljust(widths[3]),
             row[4].rjust(widths[4]), row[5], row[6]]))
    return "\n".join(lines)


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _group(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _size(count: int, size_bytes: int) -> str:
    if not count:
        return "-"
    size = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            amount = f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            return f"{count} file{'s' if count != 1 else ''}, {amount}"
        size /= 1024
    return str(count)


def summary_table(record: dict) -> str:
    """The end-of-run table: stage, status, attempts, wait, run time, outputs; then the total."""
    from clara_wf.runs import summary_rows

    header = ("STAGE", "STATUS", "ATTEMPTS", "WAIT", "RUN", "OUTPUTS")
    rows = [header] + [
        (r["stage"], r["status"], str(r["attempts"] or "-"), _seconds(r["wait_s"]), _seconds(r["run_s"]),
         _size(r["outputs"], r["bytes"]))
        for r in summary_rows(record)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    total = record.get("duration_s")
    lines.append(f"run {record.get('run_id', '?')}: {record.get('status', '?')} in {_seconds(total)}"
                 + (f" ({record['message']})" if record.get("message") and record.get("status") != "succeeded" else ""))
    return "\n".join(lines)
