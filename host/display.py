"""Live views of a running stream: a ``rich`` panel in a terminal, a widget in Jupyter.

Each display is a callable taking the live :class:`~fluorofpga.host.StreamStats`, so it
is passed as ``StreamPipeline(..., progress=display)``; it redraws at most every
``refresh_s`` seconds (a frame costs it nothing in between) and draws the final state
when closed. :func:`live_display` picks the right one: a widget inside a Jupyter kernel
when ``ipywidgets`` is importable, else text lines there, else ``rich.live`` in a
terminal.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

from .stream import StreamStats

__all__ = ["NotebookDisplay", "RichDisplay", "TextDisplay", "live_display", "stats_rows"]


def stats_rows(stats: StreamStats, total: int | None = None, unit: str = "frames"
               ) -> list[tuple[str, str]]:
    """``(label, value)`` rows of what a live view shows; ``unit`` names what the stream
    carries (``"groups"`` in SIM mode: one reconstruction per group of raw frames)."""
    done = f"{stats.frames_out}" + (f" / {total}" if total else "")
    shown = stats.dropped_indices[-8:]
    more = "..., " if len(stats.dropped_indices) > len(shown) else ""
    stages = stats.stage_ms_mean or {"process": stats.process_ms_mean}  # they overlap
    return [
        (f"{unit} out", done),
        (f"{unit} in", str(stats.frames_in)),
        ("dropped", f"{stats.dropped}" + (f" ({more}{', '.join(map(str, shown))})"
                                          if shown else "")),
        ("fps (rolling)", f"{stats.fps:.1f} ({stats.fps_rolling:.1f})"),
        ("latency p50 / p95 / p99", f"{stats.latency_ms_p50:.1f} / {stats.latency_ms_p95:.1f}"
                                    f" / {stats.latency_ms_p99:.1f} ms"),
        (" / ".join(["read", *stages, "write"]),
         " / ".join(f"{v:.1f}" for v in (stats.read_ms_mean, *stages.values(),
                                         stats.write_ms_mean)) + f" ms per {unit[:-1]}"),
        ("queued", str(stats.queued)),
        ("elapsed", f"{stats.seconds:.1f} s"),
    ]


class _Throttled:
    """Calls :meth:`_draw` at most every ``refresh_s`` seconds, and once on close."""

    def __init__(self, total: int | None, refresh_s: float) -> None:
        self.total = total
        self.refresh_s = float(refresh_s)
        self._next = 0.0
        self._last: StreamStats | None = None

    def __call__(self, stats: StreamStats) -> None:
        """Take the live stats; redraw if ``refresh_s`` passed since the last redraw."""
        self._last = stats
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.refresh_s
            self._draw(stats)

    def _draw(self, stats: StreamStats) -> None:
        raise NotImplementedError

    def open(self) -> None:
        """Start showing (called by ``with``)."""

    def close(self) -> None:
        """Draw the final state and stop."""
        if self._last is not None:
            self._draw(self._last)

    def __enter__(self) -> Any:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RichDisplay(_Throttled):
    """A ``rich.live`` table in the terminal (frames, drops, fps, latency, stage times)."""

    def __init__(
        self, total: int | None = None, title: str = "fluorofpga stream",
        console: Any = None, refresh_s: float = 0.25, unit: str = "frames",
    ) -> None:
        super().__init__(total, refresh_s)
        from rich.console import Console

        self.title = title
        self.unit = unit
        self.console = console if console is not None else Console(stderr=True)
        self._live: Any = None

    def _table(self, stats: StreamStats | None) -> Any:
        from rich.table import Table

        table = Table(title=self.title, show_header=False)
        for label, value in stats_rows(stats or StreamStats(), self.total, self.unit):
            table.add_row(label, value)
        return table

    def open(self) -> None:
        """Ready the live view: it appears with the first frame's numbers, so a stream
        refused before any frame (a bad source, no board) prints its error alone."""

    def _draw(self, stats: StreamStats) -> None:
        if self._live is None:
            from rich.live import Live

            self._live = Live(self._table(stats), console=self.console, auto_refresh=False,
                              transient=False)  # fmt: skip
            self._live.start()
        self._live.update(self._table(stats), refresh=True)

    def close(self) -> None:
        """Draw the final state and stop the live view."""
        super().close()
        if self._live is not None:
            self._live.stop()
            self._live = None


class TextDisplay(_Throttled):
    """One text line per ``refresh_s`` seconds (notebooks without ipywidgets, logs)."""

    def __init__(
        self, total: int | None = None, stream: TextIO | None = None, refresh_s: float = 1.0,
    ) -> None:
        super().__init__(total, refresh_s)
        self.stream = stream

    def _draw(self, stats: StreamStats) -> None:
        done = f"{stats.frames_out}" + (f"/{self.total}" if self.total else "")
        print(f"[stream] {done} {stats.summary()}", file=self.stream or sys.stdout, flush=True)


class NotebookDisplay(_Throttled):
    """A Jupyter progress bar with the live numbers (``ipywidgets``).

    Raises:
        ImportError: ipywidgets is not installed (use :func:`live_display`, which falls
            back to :class:`TextDisplay`).
    """

    def __init__(self, total: int | None = None, refresh_s: float = 0.5) -> None:
        super().__init__(total, refresh_s)
        import ipywidgets

        self.bar = ipywidgets.IntProgress(value=0, min=0, max=max(int(total or 0), 1),
                                          description="frames")  # fmt: skip
        self.label = ipywidgets.HTML(value="")
        self.widget = ipywidgets.VBox([self.bar, self.label])

    def open(self) -> None:
        """Show the widget in the cell's output."""
        from IPython.display import display

        display(self.widget)

    def _draw(self, stats: StreamStats) -> None:
        if self.total:
            self.bar.value = min(stats.frames_out, self.bar.max)
        else:
            self.bar.max = max(stats.frames_out, 1)
            self.bar.value = stats.frames_out
        self.label.value = "<br>".join(f"<b>{k}</b>: {v}" for k, v in stats_rows(stats,
                                                                                 self.total))


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = getattr(shell, "get_ipython", lambda: None)()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def live_display(total: int | None = None, **kwargs: Any) -> _Throttled:
    """The live view that fits where the code runs (see the module docstring)."""
    if _in_jupyter():
        try:
            return NotebookDisplay(total, **kwargs)
        except ImportError:
            return TextDisplay(total, **kwargs)
    return RichDisplay(total, **kwargs)
