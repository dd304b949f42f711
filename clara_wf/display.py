"""The terminal display of a workflow run, shared by the local and the Kubernetes engine.

On a terminal, one live line per stage (waiting / running / done / failed, elapsed) stays
at the bottom while the stages' log lines scroll above it. Elsewhere (CI, a pipe) each
state change is one plain line, so logs stay readable.
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
    DONE,
    FAILED,
    FINAL_STATES,
    RUNNING,
    STOPPED,
    WAITING,
    Info,
    LogLine,
    StageState,
    StageUpdate,
)

_MARK = {WAITING: "…", RUNNING: "▶", DONE: "✔", FAILED: "✘", STOPPED: "■"}


class RunDisplay:
    def __init__(self, stages: Sequence[str], stream: TextIO = sys.stderr, live: Optional[bool] = None):
        self.stages = list(stages)
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.width = max([len(s) for s in self.stages] + [5])
        now = time.monotonic()
        self.state: Dict[str, StageState] = {s: WAITING for s in self.stages}
        self.since: Dict[str, float] = {s: now for s in self.stages}
        self.elapsed: Dict[str, Optional[float]] = {s: None for s in self.stages}
        self.detail: Dict[str, str] = {s: "" for s in self.stages}
        self._drawn = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self.live:
            threading.Thread(target=self._tick, daemon=True).start()

    def __call__(self, event) -> None:
        with self._lock:
            if isinstance(event, LogLine):
                self._emit(f"{event.stage:>{self.width}} | {event.text}")
            elif isinstance(event, Info):
                self._emit(f"* {event.text}")
            elif isinstance(event, StageUpdate):
                self._update(event)

    def _update(self, event: StageUpdate) -> None:
        name = event.stage
        if name not in self.state:
            self.stages.append(name)
            self.width = max(self.width, len(name))
        now = time.monotonic()
        previous = self.state.get(name)
        if event.state in FINAL_STATES and previous == RUNNING:
            self.elapsed[name] = now - self.since[name]
        if event.state != previous:
            self.since[name] = now
        self.state[name] = event.state
        self.detail[name] = event.detail
        if self.live:
            self._redraw()
        else:
            self.stream.write(self._line(name) + "\n")
            self.stream.flush()

    def _line(self, name: str) -> str:
        state = self.state[name]
        if state in FINAL_STATES and self.elapsed.get(name) is not None:
            seconds = self.elapsed[name]
        else:
            seconds = time.monotonic() - self.since[name]
        text = f"{_MARK[state]} {name:<{self.width}}  {state:<7} {seconds:7.1f}s"
        if self.detail.get(name) and state in (WAITING, FAILED):
            text += f"  {'for ' if state == WAITING else ''}{self.detail[name]}"
        return text

    def _emit(self, line: str) -> None:
        if self.live:
            self._clear()
            self.stream.write(line + "\n")
            self._redraw()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self) -> None:
        self._clear()
        for name in self.stages:
            self.stream.write(self._line(name)[: 200] + "\n")
        self._drawn = len(self.stages)
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                if self._drawn:
                    self._redraw()

    def close(self) -> None:
        """Stop the live refresh, leaving the final stage lines on screen."""
        self._stop.set()
        with self._lock:
            if self.live:
                self._redraw()
                self._drawn = 0


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
