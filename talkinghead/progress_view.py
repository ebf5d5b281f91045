"""Showing a job's per-stage progress in the terminal (bars on a TTY, lines otherwise)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from talkinghead.orchestrator.progress import STAGES


class StageProgressView:
    def __init__(self, console: Console | None = None, title: str = ""):
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal
        self.title = title
        self._last_line = 0.0
        self._last_text = ""
        self.progress = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.tasks = {}

    def __enter__(self) -> StageProgressView:
        if self.interactive:
            self.progress.start()
            self.tasks = {s: self.progress.add_task(s, total=None) for s in STAGES}
        return self

    def __exit__(self, *exc) -> None:
        if self.interactive:
            self.progress.stop()

    def update(self, snapshot: dict | None) -> None:
        if not snapshot or "stages" not in snapshot:
            return
        stages = snapshot["stages"]
        if self.interactive:
            for stage, counts in stages.items():
                if stage in self.tasks:
                    self.progress.update(
                        self.tasks[stage], completed=counts["done"], total=counts["total"] or None
                    )
            return
        text = "  ".join(
            f"{s} {c['done']}/{c['total']}" for s, c in stages.items() if c["total"]
        )
        now = time.monotonic()
        if text != self._last_text and now - self._last_line >= 2.0:
            self.console.print(f"[{snapshot.get('job_id', '-')}] {text}", highlight=False)
            self._last_line, self._last_text = now, text
