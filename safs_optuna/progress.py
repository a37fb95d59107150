"""A live view of a running study: one line per stage, redrawn in place on a terminal.

The view is read from the storage alone, so it shows the work of every worker, on this machine
or elsewhere (``safs-optuna status --watch``), and the same lines serve ``run`` on a terminal.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = ["stage_line", "render", "LiveView"]

_BAR = 20


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def stage_line(name: str, st: Any, elapsed: float | None, width: int = 12) -> str:
    """One stage as a tqdm-style line: bar, trials finished / budget, running, best, time, ETA.

    ``st`` is a :class:`safs_optuna.pipeline.StageStatus`; ``elapsed`` the seconds since the
    stage's first trial started (None before).
    """
    done = min(st.finished, st.budget)
    filled = int(_BAR * done / st.budget) if st.budget else 0
    bar = "█" * filled + " " * (_BAR - filled)
    state = "NOTHING" if st.found_nothing else ("done" if st.done else "")
    best = f"best {st.best_value:.2f}%" if st.best_value is not None else "best —"
    timing = ""
    if elapsed is not None:
        timing = f"[{_clock(elapsed)}"
        if 0 < done < st.budget:
            timing += f"<{_clock(elapsed / done * (st.budget - done))}"
        timing += "]"
    state = " ".join(filter(None, (state, f"{st.running} running" if st.running else "")))
    return f"{name:<{width}} {bar}| {done:>3}/{st.budget:<3} {best:<12} {timing:<15} {state}".rstrip()


def render(stages: Sequence[tuple[str, Any, float | None]], header: str = "") -> list[str]:
    """The lines of the view: an optional header, then one line per ``(name, status, elapsed)``."""
    width = max([len(n) for n, _, _ in stages] + [5])
    return ([header] if header else []) + [stage_line(n, st, el, width) for n, st, el in stages]


class LiveView:
    """Redraw ``lines()`` in place every ``interval`` seconds on ``stream`` (a terminal).

    Example:

        .. code::

            with LiveView(lambda: ["stage 1: 3/20"]):
                long_work()
    """

    def __init__(self, lines: Callable[[], list[str]], stream: TextIO | None = None,
                 interval: float = 1.0) -> None:
        self._lines, self._stream, self._interval = lines, stream or sys.stderr, interval
        self._shown = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def draw(self) -> None:
        try:
            lines = self._lines()
        except Exception as exc:  # a busy or briefly locked storage: keep the last view
            lines = [f"(view not refreshed: {type(exc).__name__})"]
        out = "\x1b[F\x1b[2K" * self._shown if self._shown else ""  # up a line and clear it, per line
        out += "".join(f"\x1b[2K{line}\n" for line in lines)
        self._stream.write(out)
        self._stream.flush()
        self._shown = len(lines)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.draw()

    def __enter__(self) -> "LiveView":
        self.draw()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.draw()

